#!/usr/bin/env node
// More libuv threads than the default 4: file copies and stats run there.
process.env.UV_THREADPOOL_SIZE ??= '8';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
await import('../dist/cli.js');
