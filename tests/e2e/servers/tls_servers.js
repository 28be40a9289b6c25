// TLS servers in Node.js (OpenSSL linked into the node binary; memory BIOs).
//   tls_servers.js https PORT CERT KEY   HTTP/1.1: GET /ok/<x> 200, else 404
//   tls_servers.js grpc  PORT CERT KEY   gRPC over HTTP/2 (ALPN h2): any path,
//     echoes the request message; grpc-status 0
const fs = require('fs');
const [mode, port, cert, key] = process.argv.slice(2);
const opts = { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };

if (mode === 'https') {
  require('https').createServer(opts, (req, res) => {
    req.resume();
    req.on('end', () => {
      const status = req.url.startsWith('/ok/') ? 200 : 404;
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(`path=${req.url}\n`);
    });
  }).listen(+port, '127.0.0.1', () => console.log('ready'));
} else {
  const server = require('http2').createSecureServer(opts);
  server.on('stream', (stream, headers) => {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.concat(chunks)); // already length-prefixed
    });
  });
  server.listen(+port, '127.0.0.1', () => console.log('ready'));
}
