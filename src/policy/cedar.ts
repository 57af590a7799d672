/**
 * The one place the Cedar engine is imported. The Node build of cedar-wasm is
 * loaded synchronously; its preparsed policy sets and schemas live in the
 * wasm instance's thread-local storage, keyed by the ids we give them.
 */
export {
  checkParseEntities,
  checkParsePolicySet,
  checkParseSchema,
  getCedarVersion,
  isAuthorized,
  policySetTextToParts,
  policyToJson,
  preparsePolicySet,
  preparseSchema,
  schemaToJson,
  statefulIsAuthorized,
  validate,
} from '@cedar-policy/cedar-wasm/nodejs';
export type {
  AuthorizationAnswer,
  CedarValueJson,
  DetailedError,
  EntityJson,
  EntityUidJson,
  PolicyJson,
  PrincipalConstraint,
  ActionConstraint,
  ResourceConstraint,
  SchemaJson,
  Type as CedarType,
} from '@cedar-policy/cedar-wasm/nodejs';
