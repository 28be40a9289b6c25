// Node.js http server for e2e tests; same routes as py_server.py.
const http = require('http');
const port = parseInt(process.argv[2], 10);
const sleepMs = parseInt(process.argv[3] || '20', 10);

http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  // Busy-wait rather than setTimeout: Node's timers count from the loop's
  // cached clock and may fire early, and tests need a strict lower bound.
  req.on('end', () => {
    const until = process.hrtime.bigint() + BigInt(sleepMs) * 1000000n;
    while (process.hrtime.bigint() < until);
    const parts = req.url.split('?')[0].split('/');
    const kind = parts[1] || '';
    if (kind === 'chunked') {
      res.writeHead(200);  // no content-length: Node sends chunked
      for (let i = 0; i < parseInt(parts[2], 10); i++) res.write(`chunk-${i};`);
      res.end();
      return;
    }
    const status = { ok: 200, missing: 404, fail: 500, big: 200 }[kind] || 404;
    const len = Buffer.concat(chunks).length;
    const body = kind === 'big' ? 'x'.repeat(parseInt(parts[2], 10)) : `len=${len}\n`;
    res.writeHead(status, { 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
}).listen(port, '127.0.0.1', () => console.log('ready'));
