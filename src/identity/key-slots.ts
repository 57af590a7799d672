/**
 * The life of a CA key: prepare → prove → activate → retire.
 *
 * - prepare: the key exists and is published in the bundle, so relying
 *   parties learn it before anything it signs reaches them;
 * - prove: a trial SVID signed with it verified against the bundle;
 * - activate: it signs; the key it replaces is retired;
 * - retire: it signs nothing more, but stays in the bundle until everything
 *   it signed has expired (ARCHITECTURE.md invariant 8), then it is dropped.
 *
 * A prepared or proved key may be retired without ever being active (a
 * failed proof or an abandoned rotation). An active key is retired only by
 * the activation of its successor.
 */
import { identityErrors } from './errors.ts';

export const KEY_SLOT_STATES = ['prepared', 'proved', 'active', 'retired'] as const;
export type KeySlotState = (typeof KEY_SLOT_STATES)[number];

export type KeySlotStep = 'prove' | 'activate' | 'retire';

/** Audit action for each step (`<entity>.<past-tense>`). */
export const KEY_SLOT_ACTIONS = {
  prepare: 'ca.key.prepared',
  prove: 'ca.key.proved',
  activate: 'ca.key.activated',
  retire: 'ca.key.retired',
} as const;

/** True when a key in `state` is published in the bundle. */
export function isPublished(state: KeySlotState): boolean {
  return KEY_SLOT_STATES.includes(state);
}

/**
 * The state a slot moves to when `step` is applied, or a typed error when the
 * order is broken.
 *
 * @example
 * nextSlotState('prepared', 'prove');    // 'proved'
 * nextSlotState('prepared', 'activate'); // throws ERR_IDENTITY_KEY_NOT_PROVED
 */
export function nextSlotState(current: KeySlotState, step: KeySlotStep, slotId = ''): KeySlotState {
  const name = slotId === '' ? 'key' : `key \`${slotId}\``;
  switch (step) {
    case 'prove':
      if (current === 'prepared') return 'proved';
      break;
    case 'activate':
      if (current === 'proved') return 'active';
      if (current === 'prepared') {
        throw identityErrors.error('ERR_IDENTITY_KEY_NOT_PROVED', `${name} cannot be activated before a trial signature proved it`);
      }
      break;
    case 'retire':
      if (current === 'prepared' || current === 'proved') return 'retired';
      if (current === 'active') {
        throw identityErrors.error('ERR_IDENTITY_KEY_STATE_INVALID', `${name} is active and is retired only by activating its successor`);
      }
      break;
    default:
      throw new TypeError(`unknown key slot step ${String(step)}`);
  }
  throw identityErrors.error('ERR_IDENTITY_KEY_STATE_INVALID', `${name} is ${current} and cannot ${step}`);
}
