// The reads baseline: the least an HTTP server in Node does per request (a fixed JSON body with
// the same headers as cdp's), in its own process like the sidecar. It sends its port to the parent.
import http from "node:http";
import type { AddressInfo } from "node:net";

const body = JSON.stringify({ t: "0", n: 0 });
const server = http.createServer((_req, res) => {
  res.writeHead(200, {
    etag: '"0"',
    "cache-control": "no-cache",
    "cdp-schema-versions": "bench=1, wide=1",
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
});
server.listen(0, "127.0.0.1", () => process.send!((server.address() as AddressInfo).port));
process.on("disconnect", () => process.exit(0));
