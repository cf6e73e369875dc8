// The importable `squall` module: the same objects as the `squall` global.
export const Retry = globalThis.squall.Retry;
export const testing = globalThis.squall.testing;
export default globalThis.squall;
