/** A configuration value is invalid; `field` names the option at fault. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
  }
}

/** A message from the network failed to decode or validate. */
export class InvalidMessageError extends Error {
  override readonly name = 'InvalidMessageError';
}
