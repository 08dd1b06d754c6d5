// `rar serve`: every endpoint and error, images equal to `rar sample`'s for the same seed,
// concurrent requests of mixed settings batched together and each equal to itself served alone,
// the queue limit (503) and cancelled requests freeing their rows. CPU, tiny reference models.
#include <openssl/evp.h>

#include <future>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "helpers.h"
#include "io/image.h"
#include "model/vqgan.h"
#include "model/weights.h"
#include "serve/request.h"
#include "serve/scheduler.h"
#include "serve/server.h"
#include "util/error.h"

using namespace rar;
using namespace rar::test;
using json = nlohmann::json;

namespace {

std::string unbase64(const std::string& s) {
  std::string out(3 * s.size() / 4 + 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  EXPECT_GE(n, 0);
  size_t pad = 0;
  while (pad < s.size() && s[s.size() - 1 - pad] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

// A server on a free port of this machine, serving the tiny reference models in float32.
struct TestServer {
  model::LoadedGenerator g = model::load_generator(shared_ref("tiny_rar.bin"));
  model::LoadedVQ vq = model::load_vq(shared_ref("tiny_vq.bin"));
  std::unique_ptr<serve::BatchScheduler> scheduler;
  std::unique_ptr<serve::Server> server;
  std::thread thread;
  int port = 0;

  explicit TestServer(serve::SchedulerOptions so = {}, int64_t max_images = 8) {
    scheduler = std::make_unique<serve::BatchScheduler>(g.model, vq.model, so);
    serve::ServerOptions o;
    o.port = 0;
    o.limits.num_classes = g.cfg.classes;
    o.limits.max_images = max_images;
    o.class_names = {"zero", "one"};
    o.info = {{"device", "cpu"}};
    server = std::make_unique<serve::Server>(*scheduler, o);
    port = server->bind();
    thread = std::thread([this] { server->listen(); });
  }
  ~TestServer() {
    server->stop();
    thread.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  }
};

json generate(const TestServer& s, const json& body) {
  auto r = s.client().Post("/v1/generate", body.dump(), "application/json");
  EXPECT_TRUE(r) << "no response";
  if (!r) return {};
  EXPECT_EQ(r->status, 200) << r->body;
  return json::parse(r->body);
}

}  // namespace

TEST(ServeRequest, FieldsAreCheckedAndNamed) {
  serve::RequestLimits lim;
  lim.num_classes = 10, lim.max_images = 8, lim.max_body_bytes = 200;
  auto r = serve::parse_generate_request(R"({"classes": [1, 2], "n": 3, "cfg": 2.5, "top_k": 4, "seed": 9})", lim);
  EXPECT_EQ(r.classes, (std::vector<int64_t>{1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(r.opts.cfg, 2.5);
  EXPECT_EQ(r.opts.top_k, 4);
  EXPECT_EQ(r.opts.seed, 9u);
  EXPECT_EQ(r.opts.temperature, 1.0);  // defaults as rar sample
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{", "not valid JSON"},
      {"[1]", "JSON object"},
      {R"({"class": 1, "clas": 2})", "unknown field 'clas'"},
      {R"({"n": 2})", "exactly one of 'class' and 'classes'"},
      {R"({"class": 10})", "field 'class'"},
      {R"({"class": -1})", "field 'class'"},
      {R"({"class": 1.5})", "field 'class': expected an integer"},
      {R"({"classes": []})", "field 'classes'"},
      {R"({"classes": [1, "2"]})", "field 'classes'"},
      {R"({"class": 1, "n": 9})", "field 'n'"},
      {R"({"classes": [1, 2, 3], "n": 3})", "field 'n'"},
      {R"({"class": 1, "cfg": "x"})", "field 'cfg': expected a number"},
      {R"({"class": 1, "cfg": -1})", "field 'cfg'"},
      {R"({"class": 1, "temperature": 0})", "field 'temperature'"},
      {R"({"class": 1, "top_p": 1.5})", "field 'top_p'"},
      // values float32 cannot carry through sampling (every token came out 0)
      {R"({"class": 1, "cfg": 1e39})", "field 'cfg' must lie in [0, 10000], got 1e+39"},
      {R"({"class": 1, "temperature": 1e-46})", "field 'temperature' must lie in [0.0001, 10000]"},
      {R"({"class": 1, "top_p": 1e-300})", "field 'top_p' must lie in [1e-06, 1]"},
      {R"({"class": 1, "top_k": -1})", "field 'top_k'"},
      {R"({"class": 1, "seed": -3})", "field 'seed'"},
      {R"({"class": 1, "cfg_schedule": "cubic"})", "field 'cfg_schedule'"},
      {std::string(300, ' '), "over the limit"},
  };
  for (const auto& [body, needle] : bad) EXPECT_RAR_ERROR(serve::parse_generate_request(body, lim), needle);
}

TEST(Serve, EndpointsAndErrors) {
  TestServer s;
  auto c = s.client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_NE(page->body.find("<form"), std::string::npos);
  EXPECT_EQ(page->body.find("http://"), std::string::npos);  // nothing fetched from elsewhere
  EXPECT_EQ(page->body.find("https://"), std::string::npos);
  auto info = json::parse(c.Get("/v1/info")->body);
  EXPECT_EQ(info["classes"], s.g.cfg.classes);
  EXPECT_EQ(info["class_names"][1], "one");
  EXPECT_EQ(info["limits"]["max_images_per_request"], 8);

  auto bad = c.Post("/v1/generate", R"({"class": 1, "bogus": 1})", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"], "unknown field 'bogus'");
  bad = c.Post("/v1/generate", std::string(200000, 'x'), "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(json::parse(bad->body)["error"].get<std::string>().find("over the limit"), std::string::npos);
  auto missing = c.Get("/v2/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_TRUE(json::parse(missing->body).contains("error"));

  auto r = generate(s, {{"class", 1}, {"n", 2}});
  ASSERT_EQ(r["images"].size(), 2u);
  EXPECT_EQ(r["classes"], json::array({1, 1}));
  EXPECT_GT(r["seconds"].get<double>(), 0);
  auto img = io::decode_image(unbase64(r["images"][0]), "image 0");
  EXPECT_EQ(img.size(0), 256);

  // the streaming variant: one event per image, then done
  auto st = c.Post("/v1/generate?stream=1", R"({"class": 0, "n": 3, "seed": 4})", "application/json");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->status, 200);
  size_t events = 0;
  for (size_t p = 0; (p = st->body.find("event: image\n", p)) != std::string::npos; ++p) ++events;
  EXPECT_EQ(events, 3u);
  EXPECT_NE(st->body.find("event: done\n"), std::string::npos);

  const std::string m = c.Get("/metrics")->body;
  for (const char* name : {"rar_requests_total 2", "rar_images_total 5", "rar_bad_requests_total 2",
                           "rar_queue_images 0", "rar_batch_rows_bucket{le=\"+Inf\"}", "rar_request_seconds_count 2"})
    EXPECT_NE(m.find(name), std::string::npos) << name << "\n" << m;
}

TEST(Serve, ImagesEqualRarSampleForTheSameSeed) {
  TestServer s;
  auto r = generate(s, {{"class", 3}, {"n", 2}, {"cfg", 2.0}, {"cfg_power", 1.0}, {"temperature", 0.9}, {"seed", 5}});
  TempDir dir;
  auto cli = run_rar("sample --generator " + shared_ref("tiny_rar.bin") + " --tokenizer " + shared_ref("tiny_vq.bin") +
                     " --classes 3 --per-class 2 --cfg 2 --cfg-power 1 --temperature 0.9 --seed 5 --batch 2 --device cpu"
                     " --out " + dir / "imgs/");
  ASSERT_EQ(cli.status, 0) << cli.output;
  for (int i = 0; i < 2; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "imgs/%06d_class0003.png", i);
    auto want = io::read_image(dir / name);
    auto got = io::decode_image(unbase64(r["images"][i]), "served image");
    EXPECT_TRUE(got.equal(want)) << name;
  }
}

// Mixed requests sent at once share batches, and each gets the images it gets alone.
void expect_batched_equal_alone(TestServer& s) {
  const std::vector<json> bodies = {
      {{"class", 1}, {"n", 2}, {"cfg", 3.0}, {"seed", 1}},
      {{"classes", {0, 2}}, {"temperature", 0.7}, {"top_k", 20}, {"seed", 2}},
      {{"class", 4}, {"n", 3}, {"cfg", 1.5}, {"cfg_schedule", "linear"}, {"top_p", 0.8}, {"seed", 3}},
      {{"class", 5}, {"seed", 4}},
  };
  std::vector<std::future<json>> futs;
  for (const auto& b : bodies) futs.push_back(std::async(std::launch::async, [&s, b] { return generate(s, b); }));
  std::vector<json> together;
  for (auto& f : futs) together.push_back(f.get());
  const std::string m = s.client().Get("/metrics")->body;
  EXPECT_EQ(m.find("rar_batches_total 4"), std::string::npos) << "every request ran alone:\n" << m;
  for (size_t i = 0; i < bodies.size(); ++i) {
    auto alone = generate(s, bodies[i]);  // one at a time now
    ASSERT_EQ(alone["images"].size(), together[i]["images"].size()) << i;
    EXPECT_EQ(alone["classes"], together[i]["classes"]) << i;
    for (size_t k = 0; k < alone["images"].size(); ++k)
      EXPECT_EQ(alone["images"][k], together[i]["images"][k]) << "request " << i << " image " << k;
  }
}

TEST(Serve, ConcurrentMixedRequestsBatchTogetherAndEqualThemselvesAlone) {
  serve::SchedulerOptions so;
  so.max_wait_ms = 300;  // wide enough for the requests below to share batches
  TestServer s(so);
  expect_batched_equal_alone(s);
}

// With --speculative, batches of few images take speculative decoding; on the static window every
// image advances on its own, so a request gets the images it gets alone (here every batch is small
// enough); a batch of more images goes one token per step.
TEST(Serve, SpeculativeSmallBatchesEqualThemselvesAlone) {
  serve::SchedulerOptions so;
  so.max_wait_ms = 300;
  so.engine.engine = "static", so.engine.speculative = 4, so.speculative_images = 8;
  TestServer s(so, 9);
  expect_batched_equal_alone(s);
  auto speculative_batches = [&] {
    const std::string m = s.client().Get("/metrics")->body;
    const std::string key = "\nrar_speculative_batches_total ";
    const size_t at = m.find(key);
    EXPECT_NE(at, std::string::npos) << m;
    return at == std::string::npos ? -1 : std::stoll(m.substr(at + key.size()));
  };
  const int64_t before = speculative_batches();
  EXPECT_GE(before, 2);  // the requests alone, at least
  generate(s, {{"class", 1}, {"n", 9}, {"seed", 9}});  // 9 images: more than 8, one token per step
  EXPECT_EQ(speculative_batches(), before);
  generate(s, {{"class", 1}, {"n", 8}, {"seed", 9}});
  EXPECT_EQ(speculative_batches(), before + 1);
}

TEST(Serve, FullQueueIs503AndCancelledRequestsFreeTheirRows) {
  serve::SchedulerOptions so;
  so.queue = 4;
  so.max_batch = 64;
  so.max_wait_ms = 3000;  // the first request waits for company, holding the queue
  TestServer s(so, 4);
  auto first = std::async(std::launch::async, [&] { return s.client().Post("/v1/generate", R"({"class": 1, "n": 4})", "application/json"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto second = s.client().Post("/v1/generate", R"({"class": 2})", "application/json");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 503);
  EXPECT_EQ(second->get_header_value("Retry-After"), "1");
  EXPECT_EQ(first.get()->status, 200);

  // a job cancelled while queued (its client went away) takes no rows
  auto job = s.scheduler->submit(serve::parse_generate_request(R"({"class": 1, "n": 3})", {}));
  ASSERT_TRUE(job);
  job->cancel();
  for (int i = 0; i < 100 && s.scheduler->stats().cancelled_rows == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(s.scheduler->stats().cancelled_rows, 3);
  EXPECT_EQ(s.scheduler->stats().queued_images, 0);
}
