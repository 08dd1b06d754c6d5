// server.h — `rar serve`: the generation service over HTTP, one process.
//   GET  /               the web page (self-contained: no external scripts or fonts)
//   POST /v1/generate    JSON request (serve/request.h) -> {"images": [base64 PNG], "classes", "seeds", "seconds"}
//                        with ?stream=1: server-sent events, one "image" event per finished image,
//                        then "done" (or "error")
//   GET  /v1/info        model, device, precision, limits, class names
//   GET  /health         "ok"
//   GET  /metrics        Prometheus text: requests, images, queue, batch sizes, latency histogram
// Bad requests are 400 with {"error": "..."} naming the field; a full queue is 503 with
// Retry-After; a client that goes away cancels its queued rows.
//
// What one client can take, by design (GNU libmicrohttpd, event-driven): connections cost no
// thread — a few event threads serve them all, a request waiting for its images is suspended, and
// PNG encoding runs on a pool of its own — so slow or idle clients cannot keep /health from
// answering. Each connection's memory is bounded (its request line and headers must fit a fixed
// pool: beyond, 431; the body a fixed cap: beyond, 400), a request must arrive whole within a
// read timeout (slow clients are cut), connections beyond a limit get 503, the listen backlog
// takes bursts, and the port is bound without SO_REUSEPORT (a second server on it is an error).
#pragma once
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "serve/request.h"
#include "serve/scheduler.h"

namespace rar::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::port)
  RequestLimits limits;
  std::vector<std::string> class_names;  // may be shorter than the number of classes
  int threads = 0;                       // PNG-encoding workers (0: the machine's cores)
  int event_threads = 2;                 // threads running the connections' event loops
  int max_connections = 4096;            // open connections; a request beyond gets 503
  int read_timeout_s = 10;               // a request (line, headers, body) must arrive within this
  int idle_timeout_s = 30;               // a connection with no traffic this long is closed
  size_t connection_memory = 32 * 1024;  // per connection: request line + headers must fit
  int drain_seconds = 10;                // on stop: in-flight requests may finish this long
  nlohmann::json info;                   // what GET /v1/info adds about the model and device
};

class Server {
 public:
  Server(BatchScheduler& scheduler, ServerOptions opts);
  ~Server();
  // Binds and starts serving (throws rar::Error with one line when the port is in use, the address
  // is not this machine's, or the threads cannot be started); returns the port.
  int bind();
  // Blocks until stop() (or request_stop()), then shuts down: no new connections, in-flight
  // requests finish (up to drain_seconds; then they get an error), every connection is closed.
  void listen();
  // Ask listen() to return; async-signal-safe (only sets a flag).
  void request_stop() { stop_requested_.store(true); }
  void stop() { request_stop(); }
  int port() const { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<bool> stop_requested_{false};
};

// base64 of bytes (for PNGs in JSON).
std::string base64(const std::string& bytes);

}  // namespace rar::serve
