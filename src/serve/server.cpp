// server.cpp — see server.h. The HTTP layer is GNU libmicrohttpd: epoll event threads own the
// connections; a generation request is suspended while its images are made and resumed when a
// worker of our pool has encoded them; a sweep on the listen() thread cuts requests that do not
// arrive within the read timeout (libmicrohttpd's own timeout only closes connections that send
// nothing at all, which a client trickling a byte a second never is).
#include "serve/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <openssl/evp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "io/image.h"
#include "serve/page.h"
#include "util/error.h"

namespace rar::serve {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;

std::string base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

namespace {

const std::vector<double> kLatencyBuckets = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

// The JSON text of anything we send: bytes that are not UTF-8 (a class name, a field name echoed
// in an error) are replaced, never an exception.
std::string text_of(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
std::string error_text(const std::string& message) { return text_of(json{{"error", message}}); }

// PNG (fast compression) in base64.
std::string png_base64(const GeneratedImage& im) {
  return im.pixels.defined() ? base64(io::encode_png(im.pixels, /*fast=*/true)) : std::string();
}

json image_json(const GeneratedImage& im) {
  return {{"index", im.index}, {"class", im.cls}, {"seed", im.seed}, {"png", png_base64(im)}};
}

// A fixed pool of threads for the work kept off the event threads (PNG encoding). Tasks queued
// before stop() still run.
class WorkPool {
 public:
  explicit WorkPool(int n) {
    try {
      for (int i = 0; i < n; ++i) threads_.emplace_back([this] { run(); });
    } catch (const std::system_error& e) {
      stop();
      fail("serve: cannot start ", n, " worker threads (", e.what(),
           "): lower --threads, or raise the process's thread and memory limits");
    }
  }
  ~WorkPool() { stop(); }
  void post(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      tasks_.push_back(std::move(f));
    }
    cv_.notify_one();
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        f = std::move(tasks_.front());
        tasks_.pop_front();
      }
      try {
        f();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rar serve: worker: %s\n", e.what());
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
};

// One TCP connection, for the read deadline and the connection count.
struct Conn {
  int fd = -1;
  steady::time_point phase_start;  // when the request now arriving began (or the connection opened)
  bool receiving = true;           // that request has not fully arrived yet
  bool cut = false;
};

// One HTTP request. Owned through a holder in libmicrohttpd's per-request pointer; the workers
// keep it alive while they encode. `mu` guards what both sides touch.
struct Request {
  MHD_Connection* connection = nullptr;
  Conn* conn = nullptr;
  std::string body;
  bool too_large = false, started = false;
  bool stream = false;
  std::shared_ptr<Job> job;
  std::mutex mu;
  bool suspended = false, closed = false, busy = false, again = false, hung_up = false;
  // the worker's side: images encoded so far; stream: event bytes not yet taken; the end reached
  size_t encoded = 0;
  std::string pending;
  bool finished = false;
  // not streamed: the images so far, and the response once complete
  json images = json::array(), classes = json::array(), seeds = json::array();
  bool ready = false;
  unsigned status = 200;
  std::string out;
};
using RequestRef = std::shared_ptr<Request>;

}  // namespace

struct Server::Impl {
  BatchScheduler& scheduler;
  ServerOptions opts;
  MHD_Daemon* daemon = nullptr;
  int listen_fd = -1;
  std::unique_ptr<WorkPool> pool;
  std::atomic<bool> stopping{false};

  std::mutex conns_mu;  // the open connections
  std::set<Conn*> conns;
  std::mutex active_mu;  // generation requests in flight
  std::set<RequestRef> active;

  std::mutex mu;  // the counters and the latency histogram
  std::vector<int64_t> latency_counts = std::vector<int64_t>(kLatencyBuckets.size() + 1, 0);
  double latency_sum = 0;
  int64_t latency_n = 0, bad_requests = 0, finished = 0, failed = 0, cut = 0, over_limit = 0;

  Impl(BatchScheduler& s, ServerOptions o) : scheduler(s), opts(std::move(o)) {}

  void count(int64_t& c) {
    std::lock_guard<std::mutex> lock(mu);
    ++c;
  }
  void observe(double seconds) {
    std::lock_guard<std::mutex> lock(mu);
    size_t b = 0;
    while (b < kLatencyBuckets.size() && seconds > kLatencyBuckets[b]) ++b;
    ++latency_counts[b];
    latency_sum += seconds;
    ++latency_n;
    ++finished;
  }
  int64_t open_connections() {
    std::lock_guard<std::mutex> lock(conns_mu);
    return static_cast<int64_t>(conns.size());
  }

  // ---------------------------------------------------------------- responses
  static MHD_Result respond(MHD_Connection* c, unsigned status, const std::string& body, const char* type,
                            const std::vector<std::pair<const char*, std::string>>& headers = {}) {
    MHD_Response* r = MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    for (const auto& [k, v] : headers) MHD_add_response_header(r, k, v.c_str());
    const MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
  }
  MHD_Result bad_request(MHD_Connection* c, const std::string& message) {
    count(bad_requests);
    return respond(c, MHD_HTTP_BAD_REQUEST, error_text(message), "application/json");
  }

  std::string info_json() {
    json info = opts.info;
    const auto& o = scheduler.options();
    info["limits"] = {{"max_images_per_request", opts.limits.max_images}, {"max_batch", o.max_batch},
                      {"max_wait_ms", o.max_wait_ms}, {"queue", o.queue}};
    info["classes"] = opts.limits.num_classes;
    info["class_names"] = opts.class_names;
    return text_of(info);
  }

  std::string metrics() {
    const auto st = scheduler.stats();
    std::ostringstream m;
    auto counter = [&](const char* name, const char* help, int64_t v, const char* type = "counter") {
      m << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << v << "\n";
    };
    counter("rar_requests_total", "Generation requests accepted.", st.requests);
    counter("rar_requests_rejected_total", "Requests refused because the queue was full (503).", st.rejected);
    counter("rar_images_total", "Images generated.", st.images);
    counter("rar_batches_total", "GPU batches run.", st.batches);
    counter("rar_cancelled_rows_total", "Queued images dropped because their client went away.", st.cancelled_rows);
    counter("rar_queue_images", "Images waiting in the queue.", st.queued_images, "gauge");
    counter("rar_padded_rows_total", "Rows generated only to fill a captured batch size.", st.padded_rows);
    counter("rar_speculative_batches_total", "Batches generated with speculative decoding.", st.speculative_batches);
    counter("rar_connections", "Open connections.", open_connections(), "gauge");
    m << "# HELP rar_batch_seconds_total Time from batches' start to their images handed out.\n"
         "# TYPE rar_batch_seconds_total counter\nrar_batch_seconds_total " << st.batch_seconds << "\n";
    std::lock_guard<std::mutex> lock(mu);
    counter("rar_bad_requests_total", "Requests answered with 400.", bad_requests);
    counter("rar_slow_requests_cut_total", "Connections closed because a request did not arrive within the read timeout.", cut);
    counter("rar_connections_refused_total", "Requests answered with 503 because too many connections were open.", over_limit);
    m << "# HELP rar_batch_rows Rows per GPU batch.\n# TYPE rar_batch_rows histogram\n";
    int64_t cum = 0, le = 1;
    for (size_t b = 0; b < st.batch_sizes.size(); ++b, le *= 2) {
      cum += st.batch_sizes[b];
      m << "rar_batch_rows_bucket{le=\"" << le << "\"} " << cum << "\n";
    }
    m << "rar_batch_rows_bucket{le=\"+Inf\"} " << cum << "\nrar_batch_rows_sum " << st.images << "\nrar_batch_rows_count "
      << st.batches << "\n";
    m << "# HELP rar_request_seconds Time from a request's arrival to its last image.\n"
         "# TYPE rar_request_seconds histogram\n";
    cum = 0;
    for (size_t b = 0; b < kLatencyBuckets.size(); ++b) {
      cum += latency_counts[b];
      m << "rar_request_seconds_bucket{le=\"" << kLatencyBuckets[b] << "\"} " << cum << "\n";
    }
    cum += latency_counts.back();
    m << "rar_request_seconds_bucket{le=\"+Inf\"} " << cum << "\nrar_request_seconds_sum " << latency_sum
      << "\nrar_request_seconds_count " << latency_n << "\n";
    return m.str();
  }

  // ---------------------------------------------------------------- the request's life
  // The first call: headers have arrived. GET requests are answered here; a POST's size and
  // connection count are checked before its body is read.
  MHD_Result begin(Request& r, MHD_Connection* c, const std::string& url, const std::string& method) {
    if (open_connections() > opts.max_connections) {
      count(over_limit);
      return respond(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                     error_text("too many connections are open (" + std::to_string(opts.max_connections) +
                                "); retry later"),
                     "application/json", {{"Retry-After", "1"}, {MHD_HTTP_HEADER_CONNECTION, "close"}});
    }
    if (url == "/v1/generate") {
      if (method != "POST")
        return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, error_text("/v1/generate takes POST"), "application/json",
                       {{"Allow", "POST"}});
      // one Content-Length, and one within the limit (checked before any of the body is read)
      int lengths = 0;
      MHD_get_connection_values(
          c, MHD_HEADER_KIND,
          [](void* cls, MHD_ValueKind, const char* key, const char*) {
            if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) ++*static_cast<int*>(cls);
            return MHD_YES;
          },
          &lengths);
      if (lengths > 1) return bad_request(c, "more than one Content-Length header");
      if (const char* cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        char* end = nullptr;
        errno = 0;
        const unsigned long long n = std::strtoull(cl, &end, 10);
        if (*cl < '0' || *cl > '9' || !end || *end || errno == ERANGE) return bad_request(c, "bad Content-Length header");
        if (n > opts.limits.max_body_bytes)
          return bad_request(c, "request body of " + std::to_string(n) + " bytes is over the limit of " +
                                    std::to_string(opts.limits.max_body_bytes) + " bytes");
      }
      const char* s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "stream");
      r.stream = s && std::string(s) != "0";
      r.started = true;
      return MHD_YES;  // the body comes next
    }
    if (method != "GET" && method != "HEAD") {
      const bool known = url == "/" || url == "/health" || url == "/metrics" || url == "/v1/info";
      return respond(c, known ? MHD_HTTP_METHOD_NOT_ALLOWED : MHD_HTTP_NOT_FOUND,
                     error_text(known ? url + " takes GET" : "no such endpoint"), "application/json",
                     known ? std::vector<std::pair<const char*, std::string>>{{"Allow", "GET"}}
                           : std::vector<std::pair<const char*, std::string>>{});
    }
    if (url == "/") return respond(c, MHD_HTTP_OK, page_html(), "text/html; charset=utf-8");
    if (url == "/health") return respond(c, MHD_HTTP_OK, "ok\n", "text/plain");
    if (url == "/metrics") return respond(c, MHD_HTTP_OK, metrics(), "text/plain; version=0.0.4");
    if (url == "/v1/info") return respond(c, MHD_HTTP_OK, info_json(), "application/json");
    return respond(c, MHD_HTTP_NOT_FOUND, error_text("no such endpoint"), "application/json");
  }

  // The last call: the whole body is here (or, after a resume, the images are).
  MHD_Result generate(const RequestRef& ref, MHD_Connection* c) {
    Request& r = *ref;
    if (r.job) {  // resumed: the response is ready (or, a spurious wake, not yet)
      std::lock_guard<std::mutex> lock(r.mu);
      if (r.ready) return respond(c, r.status, r.out, "application/json");
      r.suspended = true;
      MHD_suspend_connection(c);
      return MHD_YES;
    }
    if (r.too_large)
      return bad_request(c, "request body is over the limit of " + std::to_string(opts.limits.max_body_bytes) + " bytes");
    GenerateRequest req;
    try {
      req = parse_generate_request(r.body, opts.limits);
    } catch (const Error& e) {
      return bad_request(c, e.what());
    }
    auto job = stopping ? nullptr : scheduler.submit(std::move(req));
    if (!job)
      return respond(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                     error_text(stopping ? "the server is stopping" : "the queue is full; retry later"),
                     "application/json", {{"Retry-After", "1"}});
    {
      std::lock_guard<std::mutex> lock(active_mu);
      active.insert(ref);
    }
    std::weak_ptr<Request> weak = ref;
    auto listener = [this, weak] {
      if (auto s = weak.lock()) pool->post([this, s] { pump(s); });
    };
    if (r.stream) {
      MHD_Response* resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, &read_events, &r, nullptr);
      if (!resp) return MHD_NO;
      MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
      MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
      const MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, resp);
      MHD_destroy_response(resp);
      {
        std::lock_guard<std::mutex> lock(r.mu);
        r.job = job;
      }
      job->set_listener(listener);
      return ok;
    }
    {
      std::lock_guard<std::mutex> lock(r.mu);
      r.job = job;
      r.suspended = true;
      MHD_suspend_connection(c);
    }
    job->set_listener(listener);
    return MHD_YES;
  }

  // Stream: hands libmicrohttpd the events made so far; with none, suspends until pump() has more.
  static ssize_t read_events(void* cls, uint64_t, char* buf, size_t max) {
    auto* r = static_cast<Request*>(cls);
    std::lock_guard<std::mutex> lock(r->mu);
    if (!r->pending.empty()) {
      const size_t n = std::min(max, r->pending.size());
      std::memcpy(buf, r->pending.data(), n);
      r->pending.erase(0, n);
      return static_cast<ssize_t>(n);
    }
    if (r->finished) return MHD_CONTENT_READER_END_OF_STREAM;
    r->suspended = true;
    MHD_suspend_connection(r->connection);
    return 0;
  }

  // A worker: turns the job's new images into events (stream) or into the response, then wakes
  // the connection. One pump per request at a time; a wake-up meanwhile makes it go round again.
  void pump(const RequestRef& ref) {
    Request& r = *ref;
    {
      std::lock_guard<std::mutex> lock(r.mu);
      if (r.busy) {
        r.again = true;
        return;
      }
      r.busy = true;
    }
    for (;;) {
      const auto& job = r.job;
      const size_t total = job->request.classes.size();
      const auto fresh = job->images_after(r.encoded);
      const std::string err = job->error();
      std::string events;
      bool end = false, ready = false;
      unsigned status = 200;
      std::string out;
      const size_t encoded = r.encoded + fresh.size();
      if (r.stream) {
        for (const auto& im : fresh) events += "event: image\ndata: " + text_of(image_json(im)) + "\n\n";
      } else {
        for (const auto& im : fresh) {
          r.images.push_back(png_base64(im));
          r.classes.push_back(im.cls);
          r.seeds.push_back(im.seed);
        }
      }
      if (!err.empty()) {
        count(failed);
        end = ready = true;
        events += "event: error\ndata: " + error_text(err) + "\n\n";
        status = stopping ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_INTERNAL_SERVER_ERROR;
        out = error_text(err);
      } else if (encoded == total) {
        const double s = std::chrono::duration<double>(steady::now() - job->start).count();
        observe(s);
        end = ready = true;
        events += "event: done\ndata: " + text_of(json{{"seconds", s}, {"images", total}}) + "\n\n";
        out = text_of(json{{"images", r.images}, {"classes", r.classes}, {"seeds", r.seeds}, {"seconds", s}});
      }
      std::lock_guard<std::mutex> lock(r.mu);
      r.encoded = encoded;
      if (r.stream) {
        r.pending += events;
        r.finished = r.finished || end;
      } else if (ready) {
        r.ready = true;
        r.status = status;
        r.out = std::move(out);
      }
      const bool wake = r.stream ? (!r.pending.empty() || r.finished) : r.ready;
      if (wake && r.suspended && !r.closed) {
        r.suspended = false;
        MHD_resume_connection(r.connection);
      }
      if (!r.again) {
        r.busy = false;
        return;
      }
      r.again = false;
    }
  }

  // ---------------------------------------------------------------- libmicrohttpd's callbacks
  static MHD_Result on_request(void* cls, MHD_Connection* c, const char* url, const char* method, const char*,
                               const char* upload, size_t* upload_size, void** req_cls) {
    auto* im = static_cast<Impl*>(cls);
    if (!*req_cls) {
      auto ref = std::make_shared<Request>();
      ref->connection = c;
      if (const auto* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT))
        ref->conn = static_cast<Conn*>(info->socket_context);
      *req_cls = new RequestRef(ref);
      const MHD_Result res = im->begin(*ref, c, url, method);
      if (!ref->started) im->arrived(*ref);
      return res;
    }
    const RequestRef& ref = *static_cast<RequestRef*>(*req_cls);
    Request& r = *ref;
    if (*upload_size > 0) {  // a piece of the body: kept up to the limit, the rest dropped
      if (!r.too_large) {
        if (r.body.size() + *upload_size > im->opts.limits.max_body_bytes) {
          r.too_large = true;
          r.body.clear();
        } else {
          r.body.append(upload, *upload_size);
        }
      }
      *upload_size = 0;
      return MHD_YES;
    }
    im->arrived(r);
    return im->generate(ref, c);
  }

  // The request has fully arrived: its connection is no longer subject to the read deadline.
  void arrived(Request& r) {
    if (!r.conn) return;
    std::lock_guard<std::mutex> lock(conns_mu);
    r.conn->receiving = false;
  }

  static void on_completed(void* cls, MHD_Connection*, void** req_cls, MHD_RequestTerminationCode toe) {
    auto* im = static_cast<Impl*>(cls);
    auto* holder = static_cast<RequestRef*>(*req_cls);
    if (!holder) return;
    RequestRef ref = *holder;
    delete holder;
    *req_cls = nullptr;
    std::shared_ptr<Job> job;
    {
      std::lock_guard<std::mutex> lock(ref->mu);
      ref->closed = true;
      job = ref->job;
    }
    if (job) {
      if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) job->cancel();  // the client went away: its rows are dropped
      job->set_listener(nullptr);
      std::lock_guard<std::mutex> lock(im->active_mu);
      im->active.erase(ref);
    }
    if (ref->conn) {  // the next request on this connection starts arriving now
      std::lock_guard<std::mutex> lock(im->conns_mu);
      ref->conn->receiving = true;
      ref->conn->phase_start = steady::now();
    }
  }

  static void on_connection(void* cls, MHD_Connection* c, void** socket_context, MHD_ConnectionNotificationCode toe) {
    auto* im = static_cast<Impl*>(cls);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
      auto* conn = new Conn;
      if (const auto* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD)) conn->fd = info->connect_fd;
      conn->phase_start = steady::now();
      std::lock_guard<std::mutex> lock(im->conns_mu);
      im->conns.insert(conn);
      *socket_context = conn;
    } else if (auto* conn = static_cast<Conn*>(*socket_context)) {
      // called before libmicrohttpd closes the socket: the sweep never shuts down a reused descriptor
      std::lock_guard<std::mutex> lock(im->conns_mu);
      im->conns.erase(conn);
      delete conn;
      *socket_context = nullptr;
    }
  }

  // Cuts the connections whose request has been arriving for longer than the read timeout.
  void sweep() {
    const auto now = steady::now();
    const auto limit = std::chrono::seconds(opts.read_timeout_s);
    int64_t n = 0;
    {
      std::lock_guard<std::mutex> lock(conns_mu);
      for (Conn* conn : conns)
        if (conn->receiving && !conn->cut && conn->fd >= 0 && now - conn->phase_start > limit) {
          ::shutdown(conn->fd, SHUT_RDWR);  // libmicrohttpd sees the end and closes it
          conn->cut = true;
          ++n;
        }
    }
    if (n) {
      std::lock_guard<std::mutex> lock(mu);
      cut += n;
    }
  }

  // A client that hung up while its request waits (suspended, so libmicrohttpd does not watch its
  // socket): its job is cancelled — queued rows are dropped, not generated for nobody — and the
  // connection is woken to be closed.
  void drop_hung_up() {
    std::vector<RequestRef> gone;
    {
      std::lock_guard<std::mutex> lock(active_mu);  // held: a request in `active` keeps its Conn alive
      for (const auto& r : active) {
        if (r->hung_up || !r->conn || r->conn->fd < 0) continue;
        pollfd p{r->conn->fd, POLLRDHUP, 0};
        if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
          r->hung_up = true;
          gone.push_back(r);
        }
      }
    }
    for (auto& r : gone) {
      r->job->cancel();
      std::lock_guard<std::mutex> lock(r->mu);
      if (!r->ready) {
        r->ready = true;
        r->status = MHD_HTTP_BAD_REQUEST;
        r->out = error_text("the client went away");
      }
      r->finished = true;
      if (r->suspended && !r->closed) {
        r->suspended = false;
        MHD_resume_connection(r->connection);
      }
    }
  }

  size_t active_requests() {
    std::lock_guard<std::mutex> lock(active_mu);
    return active.size();
  }
};

namespace {

// A listening socket on host:port (0 = any free port), without SO_REUSEPORT: a port another
// process serves on is an error, not a second server sharing it.
int listen_on(const std::string& host, int port, int& bound_port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int gai = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  check(gai == 0 && res, "serve: cannot use the address ", host, " (", gai_strerror(gai), ")");
  std::string why;
  int fd = -1;
  for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // rebinding after TIME_WAIT, not sharing
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 4096) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  check(fd >= 0, "serve: cannot listen on ", host, ":", port, " (", why,
        why == std::strerror(EADDRINUSE) ? ": another server holds the port" : "", ")");
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  bound_port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                        : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

// Enough descriptors for the connection limit (the soft limit is often 1024).
void raise_descriptor_limit(int connections) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  const rlim_t want = static_cast<rlim_t>(connections) + 256;
  if (rl.rlim_cur >= want) return;
  rl.rlim_cur = std::min(want, rl.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &rl);
}

}  // namespace

Server::Server(BatchScheduler& scheduler, ServerOptions opts) : impl_(std::make_unique<Impl>(scheduler, std::move(opts))) {
  auto& o = impl_->opts;
  check(o.max_connections >= 1 && o.read_timeout_s >= 1 && o.idle_timeout_s >= 1 && o.event_threads >= 1 &&
            o.connection_memory >= 4096,
        "serve: bad connection limits");
}

Server::~Server() {
  if (impl_->daemon) MHD_stop_daemon(impl_->daemon);
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
  if (impl_->pool) impl_->pool->stop();
}

int Server::bind() {
  auto& im = *impl_;
  const auto& o = im.opts;
  raise_descriptor_limit(o.max_connections);
  im.listen_fd = listen_on(o.host, o.port, port_);
  const int workers = o.threads > 0 ? o.threads : std::max(2u, std::thread::hardware_concurrency());
  im.pool = std::make_unique<WorkPool>(workers);
  // beyond our limit a request still gets its 503; beyond this one the connection is refused
  const unsigned hard_limit = static_cast<unsigned>(o.max_connections) + 64;
  im.daemon = MHD_start_daemon(
      MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME, 0, nullptr, nullptr, &Impl::on_request, &im,
      MHD_OPTION_LISTEN_SOCKET, im.listen_fd, MHD_OPTION_THREAD_POOL_SIZE, static_cast<unsigned>(o.event_threads),
      MHD_OPTION_CONNECTION_LIMIT, hard_limit, MHD_OPTION_CONNECTION_MEMORY_LIMIT, o.connection_memory,
      MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(o.idle_timeout_s), MHD_OPTION_NOTIFY_COMPLETED,
      &Impl::on_completed, &im, MHD_OPTION_NOTIFY_CONNECTION, &Impl::on_connection, &im,
      MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_END);
  if (!im.daemon) {
    const int err = errno;
    ::close(im.listen_fd);
    im.listen_fd = -1;
    fail("serve: cannot start the HTTP server's ", o.event_threads, " event threads (",
         err ? std::strerror(err) : "libmicrohttpd refused its settings", ")");
  }
  return port_;
}

void Server::listen() {
  auto& im = *impl_;
  check(im.daemon != nullptr, "serve: listen() before bind()");
  auto trimmed = steady::now();
  while (!stop_requested_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    im.sweep();
    im.drop_hung_up();
    // freed memory back to the system now and then (many threads' allocations), so that the
    // process's size follows what it holds
    if (steady::now() - trimmed > std::chrono::seconds(10)) {
      ::malloc_trim(0);
      trimmed = steady::now();
    }
  }
  // No new connections; queued requests fail; running ones may finish for drain_seconds.
  const int fd = MHD_quiesce_daemon(im.daemon);
  if (fd >= 0) {
    ::close(fd);
    im.listen_fd = -1;
  }
  im.stopping = true;
  im.scheduler.stop_accepting("the server is stopping");
  const auto deadline = steady::now() + std::chrono::seconds(im.opts.drain_seconds);
  while (im.active_requests() > 0 && steady::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    im.sweep();
  }
  std::vector<RequestRef> left;
  {
    std::lock_guard<std::mutex> lock(im.active_mu);
    left.assign(im.active.begin(), im.active.end());
  }
  for (auto& r : left) r->job->fail_with("the server is stopping");
  // their error responses go out (a moment), then every connection closes
  const auto flush = steady::now() + std::chrono::seconds(1);
  while (im.active_requests() > 0 && steady::now() < flush) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  im.pool->stop();
  MHD_stop_daemon(im.daemon);
  im.daemon = nullptr;
}

}  // namespace rar::serve
