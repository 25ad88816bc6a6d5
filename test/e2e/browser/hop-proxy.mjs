// A forward HTTP proxy for the browser that connects onwards from a chosen
// loopback source address (127.0.0.2, 127.0.0.3, …). nginx then sees that
// address as $remote_addr: the test moves the browser to "another network"
// by changing proxy.from, while the page keeps its origin, cookies and
// IndexedDB. Every onward request uses a new connection, so a change takes
// effect with the next request.
import http from 'node:http';

/** startHopProxy starts the proxy on 127.0.0.1:0; set .from to change the source address. */
export async function startHopProxy(from = '127.0.0.1') {
  const hop = { from, url: '', server: undefined, seen: [] };
  hop.server = http.createServer((req, res) => {
    let target;
    try {
      target = new URL(req.url);
    } catch {
      res.writeHead(400).end();
      return;
    }
    // Loopback only: the browser's background requests never leave the machine.
    if (target.protocol !== 'http:' || target.hostname !== '127.0.0.1') {
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.end('hop proxy: loopback only');
      return;
    }
    hop.seen.push({ from: hop.from, method: req.method, path: target.pathname });
    const up = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: target.pathname + target.search,
        headers: req.headers,
        localAddress: hop.from,
        agent: false,
      },
      (r) => {
        res.writeHead(r.statusCode, r.rawHeaders);
        r.pipe(res);
      },
    );
    up.on('error', (e) => {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`hop proxy: ${e.message}`);
    });
    req.pipe(up);
  });
  hop.server.keepAliveTimeout = 1000;
  const port = await new Promise((r) => hop.server.listen(0, '127.0.0.1', () => r(hop.server.address().port)));
  hop.url = `http://127.0.0.1:${port}`;
  hop.close = () =>
    new Promise((r) => {
      hop.server.close(r);
      hop.server.closeAllConnections?.();
    });
  return hop;
}
