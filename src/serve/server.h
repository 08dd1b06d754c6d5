// server.h — `rar serve`: the generation service over HTTP (cpp-httplib), one process.
//   GET  /               the web page (self-contained: no external scripts or fonts)
//   POST /v1/generate    JSON request (serve/request.h) -> {"images": [base64 PNG], "classes", "seeds", "seconds"}
//                        with ?stream=1: server-sent events, one "image" event per finished image,
//                        then "done" (or "error")
//   GET  /v1/info        model, device, precision, limits, class names
//   GET  /health         "ok"
//   GET  /metrics        Prometheus text: requests, images, queue, batch sizes, latency histogram
// Bad requests are 400 with {"error": "..."} naming the field; a full queue is 503 with
// Retry-After; a client that goes away cancels its queued rows.
#pragma once
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
  int threads = 256;                     // connections handled at once (each waiting request holds one)
  nlohmann::json info;                   // what GET /v1/info adds about the model and device
};

class Server {
 public:
  Server(BatchScheduler& scheduler, ServerOptions opts);
  ~Server();
  // Binds (throws rar::Error when it cannot); returns the port.
  int bind();
  // Serves until stop() (blocking).
  void listen();
  void stop();
  int port() const { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// base64 of bytes (for PNGs in JSON).
std::string base64(const std::string& bytes);

}  // namespace rar::serve
