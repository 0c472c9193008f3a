// A tiny HTTP server to try `aigc-code complete` on (see README).
const http = require("http");

function handle(req, res) {
  res.writeHead(200, { "Content-Type": "text/plain" });
  res.
}

const server = http.createServer(handle);
server.listen(8080);
