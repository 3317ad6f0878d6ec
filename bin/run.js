#!/usr/bin/env node
// Entry point: the front door (src/cli/main.ts) reads every command line; oclif is loaded for help only.
// The build bundles the front door (scripts/bundle-fast-path.js); the plain modules when it is not there.
const { main } = await import('../dist/main.bundle.js').catch((e) => {
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes('main.bundle.js')) throw e;
  return import('../dist/cli/main.js');
});
await main(process.argv.slice(2), { oclif: () => import('@oclif/core'), bin: import.meta.url });
