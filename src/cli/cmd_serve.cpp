// `rar serve` — the generation service (serve/server.h): a web page, a JSON API and batching of
// concurrent requests on one device.
#include <csignal>
#include <cstdio>

#include "cli/commands.h"
#include "cli/run_options.h"
#include "model/weights.h"
#include "serve/imagenet_classes.h"
#include "serve/server.h"
#include "util/atomic_file.h"
#include "util/device.h"
#include "util/error.h"

namespace rar::cli {
namespace {

serve::Server* g_server = nullptr;
void on_signal(int) {
  if (g_server) g_server->request_stop();  // only sets a flag (async-signal-safe)
}

struct ServeArgs {
  std::string generator, tokenizer, host = "127.0.0.1", class_names;
  GenerationFlags gen;               // device, precision, decode_precision
  sampling::SamplingOptions engine;  // the batch's engine, kv_cache, attention_kernel, order, speculative
  int port = 8080, threads = 0, max_connections = 4096, read_timeout = 10, drain = 10;
  int64_t max_batch = 256, max_wait_ms = 20, max_images = 64, queue = 1024, decode_batch = 64, speculative_images = 4;
  bool verbose = false, no_padding = false;
};

void run(const ServeArgs& a) {
  const torch::Device device = parse_device(a.gen.device);
  const std::string precision = resolve_precision(a.gen.precision, device);
  auto g = model::load_generator(a.generator, device, parse_precision(precision));
  const std::string decode_precision = resolve_decode_precision(a.gen.decode_precision, device);
  auto vq = model::load_vq(a.tokenizer, device, decode_precision == "bf16" ? torch::kBFloat16 : torch::kFloat32);
  check(vq.cfg.codebook_size == g.cfg.codebook, "tokenizer codebook (", vq.cfg.codebook_size,
        " codes) does not match the generator's vocabulary (", g.cfg.codebook, ")");

  serve::SchedulerOptions so;
  so.max_batch = a.max_batch, so.max_wait_ms = a.max_wait_ms, so.queue = a.queue, so.decode_batch = a.decode_batch;
  so.verbose = a.verbose, so.pad_rows = !a.no_padding;
  so.engine = a.engine;
  so.speculative_images = a.speculative_images;
  so.engine.validate();
  check(a.max_images <= a.queue, "--max-images-per-request (", a.max_images, ") must not exceed --queue (", a.queue, ")");

  serve::ServerOptions o;
  o.host = a.host, o.port = a.port, o.threads = a.threads;
  o.max_connections = a.max_connections, o.read_timeout_s = a.read_timeout, o.drain_seconds = a.drain;
  o.limits.num_classes = g.cfg.classes;
  o.limits.max_images = a.max_images;
  if (g.sampling) {  // requests that name no guidance get the generator's own settings, as `rar sample`
    o.limits.sampling.cfg = g.sampling->cfg, o.limits.sampling.cfg_power = g.sampling->cfg_power;
    o.limits.sampling.temperature = g.sampling->temperature;
    std::fprintf(stderr, "rar serve: requests default to %s settings: cfg %g, cfg_power %g, temperature %g\n",
                 g.sampling->source.c_str(), g.sampling->cfg, g.sampling->cfg_power, g.sampling->temperature);
  }
  if (!a.class_names.empty()) {
    o.class_names = read_lines(a.class_names);
  } else if (g.cfg.classes == 1000) {
    o.class_names = serve::imagenet_class_names();
  }
  o.info = {{"generator", a.generator}, {"tokenizer", a.tokenizer}, {"device", device.str()}, {"precision", precision},
            {"decode_precision", decode_precision},
            {"sampling_defaults", {{"cfg", o.limits.sampling.cfg}, {"cfg_power", o.limits.sampling.cfg_power},
                                   {"temperature", o.limits.sampling.temperature}}}, {"kv_cache", a.engine.kv_cache}, {"speculative", a.engine.speculative},
            {"attention_kernel", a.engine.attention_kernel}, {"order", a.engine.order}, {"model", g.cfg.to_json()}};

  serve::BatchScheduler scheduler(g.model, vq.model, so);
  serve::Server server(scheduler, o);
  const int port = server.bind();
  std::fprintf(stderr, "rar serve: http://%s:%d/ (%s%s), %s, batches of up to %lld images within %lld ms\n",
               a.host.c_str(), port, a.host == "127.0.0.1" || a.host == "localhost" ? "this machine only" : "reachable from the network",
               a.host == "127.0.0.1" || a.host == "localhost" ? "; --host 0.0.0.0 to open it" : "",
               device.str().c_str(), (long long)a.max_batch, (long long)a.max_wait_ms);
  g_server = &server;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  server.listen();
  g_server = nullptr;
  std::fprintf(stderr, "rar serve: stopped\n");
}

}  // namespace

void add_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* c = app.add_subcommand("serve", "Serve generation over HTTP: a web page and a JSON API, batching concurrent requests");
  c->add_option("--generator", a->generator, "generator checkpoint")->required();
  c->add_option("--tokenizer", a->tokenizer, "VQ tokenizer checkpoint")->required();
  c->add_option("--host", a->host, "address to listen on (default 127.0.0.1: this machine only)");
  c->add_option("--port", a->port, "port (0 = any free port)")->check(CLI::Range(0, 65535));
  add_generation_flags(c, a->gen, a->engine);
  c->add_option("--speculative-images", a->speculative_images,
                "with --speculative: batches of at most this many images use it")->check(positive_count());
  c->add_option("--max-batch", a->max_batch, "most images in one GPU batch")->check(positive_count());
  c->add_option("--max-wait-ms", a->max_wait_ms, "longest wait for a batch to fill")->check(count());
  c->add_option("--max-images-per-request", a->max_images, "most images one request may ask for")->check(positive_count());
  c->add_option("--queue", a->queue, "most images waiting; beyond, requests get 503")->check(positive_count());
  c->add_option("--decode-batch", a->decode_batch, "images decoded at once")->check(positive_count());
  c->add_option("--threads", a->threads, "threads that encode the images of responses (default: the machine's cores)")
      ->check(CLI::Range(0, 1024));
  c->add_option("--max-connections", a->max_connections, "open connections; a request beyond gets 503 (default 4096)")
      ->check(CLI::Range(1, 1 << 20));
  c->add_option("--read-timeout", a->read_timeout, "seconds a request (line, headers, body) may take to arrive; slower clients are cut (default 10)")
      ->check(CLI::Range(1, 3600));
  c->add_option("--drain", a->drain, "on SIGTERM/SIGINT: seconds running requests may take to finish before they get an error (default 10)")
      ->check(CLI::Range(0, 3600));
  c->add_flag("--no-padding", a->no_padding, "generate each batch at its own row count (a graph capture per new count)");
  c->add_flag("--verbose", a->verbose, "one line per batch on stderr: rows, padding, times");
  c->add_option("--class-names", a->class_names, "class names, one per line (default: ImageNet's for 1000 classes)");
  c->callback([a] { run(*a); });
}

}  // namespace rar::cli
