// server.cpp — see server.h.
#include "serve/server.h"

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <sstream>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "io/image.h"
#include "serve/page.h"
#include "util/error.h"

namespace rar::serve {

using json = nlohmann::json;

std::string base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

namespace {

const std::vector<double> kLatencyBuckets = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

void send_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(json{{"error", message}}.dump(), "application/json");
}

// PNG (fast compression) in base64, encoded by the connection's own thread.
std::string png_base64(const GeneratedImage& im) {
  return im.pixels.defined() ? base64(io::encode_png(im.pixels, /*fast=*/true)) : std::string();
}

json image_json(const GeneratedImage& im) {
  return {{"index", im.index}, {"class", im.cls}, {"seed", im.seed}, {"png", png_base64(im)}};
}

}  // namespace

struct Server::Impl {
  BatchScheduler& scheduler;
  ServerOptions opts;
  httplib::Server http;
  std::mutex mu;  // the latency histogram
  std::vector<int64_t> latency_counts = std::vector<int64_t>(kLatencyBuckets.size() + 1, 0);
  double latency_sum = 0;
  int64_t latency_n = 0, bad_requests = 0, finished = 0, failed = 0;

  Impl(BatchScheduler& s, ServerOptions o) : scheduler(s), opts(std::move(o)) {}

  void observe(double seconds) {
    std::lock_guard<std::mutex> lock(mu);
    size_t b = 0;
    while (b < kLatencyBuckets.size() && seconds > kLatencyBuckets[b]) ++b;
    ++latency_counts[b];
    latency_sum += seconds;
    ++latency_n;
    ++finished;
  }

  // The parsed request, or an error response (400 / 503) already set.
  std::shared_ptr<Job> accept(const httplib::Request& req, httplib::Response& res) {
    GenerateRequest r;
    try {
      r = parse_generate_request(req.body, opts.limits);
    } catch (const Error& e) {
      {
        std::lock_guard<std::mutex> lock(mu);
        ++bad_requests;
      }
      send_error(res, 400, e.what());
      return nullptr;
    }
    auto job = scheduler.submit(std::move(r));
    if (!job) {
      res.set_header("Retry-After", "1");
      send_error(res, 503, "the queue is full; retry later");
    }
    return job;
  }

  void generate(const httplib::Request& req, httplib::Response& res) {
    auto job = accept(req, res);
    if (!job) return;
    const size_t total = job->request.classes.size();
    if (req.has_param("stream") && req.get_param_value("stream") != "0") {
      res.set_header("Cache-Control", "no-cache");
      auto sent = std::make_shared<size_t>(0);
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, job, sent, total](size_t, httplib::DataSink& sink) {
            auto images = job->wait_for_more(*sent);
            const std::string err = job->error();
            for (; *sent < images.size(); ++*sent) {
              const std::string ev = "event: image\ndata: " + image_json(images[*sent]).dump() + "\n\n";
              if (!sink.write(ev.data(), ev.size())) {
                job->cancel();  // the client went away: its queued rows are dropped
                return false;
              }
            }
            if (!err.empty()) {
              const std::string ev = "event: error\ndata: " + json{{"error", err}}.dump() + "\n\n";
              sink.write(ev.data(), ev.size());
              sink.done();
              return true;
            }
            if (*sent == total) {
              const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - job->start).count();
              observe(s);
              const std::string ev = "event: done\ndata: " + json{{"seconds", s}, {"images", total}}.dump() + "\n\n";
              sink.write(ev.data(), ev.size());
              sink.done();
            }
            return true;
          },
          [job](bool success) {
            if (!success) job->cancel();
          });
      return;
    }
    std::vector<GeneratedImage> images;
    while (images.size() < total && job->error().empty()) {
      images = job->wait_for_more(images.size());
      if (job->cancelled()) return;
    }
    if (!job->error().empty()) {
      std::lock_guard<std::mutex> lock(mu);
      ++failed;
      send_error(res, 500, job->error());
      return;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - job->start).count();
    observe(s);
    json out = {{"images", json::array()}, {"classes", json::array()}, {"seeds", json::array()}, {"seconds", s}};
    for (const auto& im : images) {
      out["images"].push_back(png_base64(im));
      out["classes"].push_back(im.cls);
      out["seeds"].push_back(im.seed);
    }
    res.set_content(out.dump(), "application/json");
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
    m << "# HELP rar_batch_seconds_total Time from batches' start to their images handed out.\n"
         "# TYPE rar_batch_seconds_total counter\nrar_batch_seconds_total " << st.batch_seconds << "\n";
    std::lock_guard<std::mutex> lock(mu);
    counter("rar_bad_requests_total", "Requests answered with 400.", bad_requests);
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
};

Server::Server(BatchScheduler& scheduler, ServerOptions opts) : impl_(std::make_unique<Impl>(scheduler, std::move(opts))) {
  auto& http = impl_->http;
  Impl* im = impl_.get();
  http.set_payload_max_length(im->opts.limits.max_body_bytes);
  // A waiting request holds its connection's thread, so the pool bounds how many requests can be
  // in flight together — and so how full a batch can get (httplib's default is a handful).
  const int threads = std::max(4, im->opts.threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(page_html(), "text/html; charset=utf-8"); });
  http.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
  http.Get("/metrics", [im](const httplib::Request&, httplib::Response& res) {
    res.set_content(im->metrics(), "text/plain; version=0.0.4");
  });
  http.Get("/v1/info", [im](const httplib::Request&, httplib::Response& res) {
    json info = im->opts.info;
    const auto& o = im->scheduler.options();
    info["limits"] = {{"max_images_per_request", im->opts.limits.max_images}, {"max_batch", o.max_batch},
                      {"max_wait_ms", o.max_wait_ms}, {"queue", o.queue}};
    info["classes"] = im->opts.limits.num_classes;
    info["class_names"] = im->opts.class_names;
    res.set_content(info.dump(), "application/json");
  });
  http.Post("/v1/generate", [im](const httplib::Request& req, httplib::Response& res) { im->generate(req, res); });
  http.set_error_handler([im](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) {  // over set_payload_max_length: a bad request like any other
      {
        std::lock_guard<std::mutex> lock(im->mu);
        ++im->bad_requests;
      }
      send_error(res, 400, "request body is over the limit of " + std::to_string(im->opts.limits.max_body_bytes) + " bytes");
      return;
    }
    res.set_content(json{{"error", res.status == 404 ? "no such endpoint" : "bad request"}}.dump(), "application/json");
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg = e.what();
    } catch (...) {
    }
    send_error(res, 500, msg);
  });
}

Server::~Server() { stop(); }

int Server::bind() {
  auto& o = impl_->opts;
  if (o.port == 0) {
    port_ = impl_->http.bind_to_any_port(o.host);
    check(port_ > 0, "serve: cannot bind to ", o.host);
  } else {
    check(impl_->http.bind_to_port(o.host, o.port), "serve: cannot bind to ", o.host, ":", o.port,
          " (in use, or not an address of this machine)");
    port_ = o.port;
  }
  return port_;
}

void Server::listen() { impl_->http.listen_after_bind(); }
void Server::stop() { impl_->http.stop(); }

}  // namespace rar::serve
