/**
 * @peculiar/x509, loaded after the Reflect metadata polyfill its dependency
 * tsyringe needs at load time. Every file of this context imports the library
 * from here, never directly.
 */
import 'reflect-metadata';

export * from '@peculiar/x509';
