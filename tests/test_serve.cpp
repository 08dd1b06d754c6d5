// `rar serve`: every endpoint and error, images equal to `rar sample`'s for the same seed,
// concurrent requests of mixed settings batched together and each equal to itself served alone,
// the queue limit (503) and cancelled requests freeing their rows. CPU, tiny reference models.
#include <openssl/evp.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <functional>
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

  explicit TestServer(serve::SchedulerOptions so = {}, int64_t max_images = 8,
                      const std::function<void(serve::ServerOptions&)>& edit = {}) {
    scheduler = std::make_unique<serve::BatchScheduler>(g.model, vq.model, so);
    serve::ServerOptions o;
    o.port = 0;
    o.limits.num_classes = g.cfg.classes;
    o.limits.max_images = max_images;
    o.class_names = {"zero", "one"};
    o.info = {{"device", "cpu"}};
    o.threads = 2;
    if (edit) edit(o);
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

// The images of a response equal those `rar sample` writes with `flags` for `n` images of class `cls`.
static void expect_rar_sample_images(const json& served, const std::string& flags, int cls, int n) {
  TempDir dir;
  auto cli = run_rar("sample --generator " + shared_ref("tiny_rar.bin") + " --tokenizer " + shared_ref("tiny_vq.bin") +
                     " --classes " + std::to_string(cls) + " --per-class " + std::to_string(n) + " --batch " +
                     std::to_string(n) + " " + flags + " --out " + dir / "imgs/");
  ASSERT_EQ(cli.status, 0) << cli.output;
  ASSERT_EQ(served["images"].size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "imgs/%06d_class%04d.png", i, cls);
    auto want = io::read_image(dir / name);
    auto got = io::decode_image(unbase64(served["images"][i]), "served image");
    EXPECT_TRUE(got.equal(want)) << name;
  }
}

TEST(Serve, ImagesEqualRarSampleForTheSameSeed) {
  TestServer s;
  auto r = generate(s, {{"class", 3}, {"n", 2}, {"cfg", 2.0}, {"cfg_power", 1.0}, {"temperature", 0.9}, {"seed", 5}});
  expect_rar_sample_images(r, "--cfg 2 --cfg-power 1 --temperature 0.9 --seed 5 --device cpu", 3, 2);
}

// Mixed requests sent at once share one batch, and each gets the images it gets alone. Whether
// they share it is no matter of timing: the batching server waits (up to a minute) until its
// batch of exactly their 8 images is full; the second server, which waits for nobody, serves each
// request alone.
namespace {
const std::vector<json> kMixedRequests = {
    {{"class", 1}, {"n", 2}, {"cfg", 3.0}, {"seed", 1}},
    {{"classes", {0, 2}}, {"temperature", 0.7}, {"top_k", 20}, {"seed", 2}},
    {{"class", 4}, {"n", 3}, {"cfg", 1.5}, {"cfg_schedule", "linear"}, {"top_p", 0.8}, {"seed", 3}},
    {{"class", 5}, {"seed", 4}},
};
int64_t metric(TestServer& s, const std::string& name) {
  const std::string m = s.client().Get("/metrics")->body, key = "\n" + name + " ";
  const size_t at = m.find(key);
  EXPECT_NE(at, std::string::npos) << name << " missing:\n" << m;
  return at == std::string::npos ? -1 : std::stoll(m.substr(at + key.size()));
}
void expect_batched_equal_alone(serve::SchedulerOptions so, TestServer& alone) {
  so.max_batch = 8;  // the four requests' images
  so.max_wait_ms = 60000;
  TestServer batching(so);
  std::vector<std::future<json>> futs;
  for (const auto& b : kMixedRequests) futs.push_back(std::async(std::launch::async, [&batching, b] { return generate(batching, b); }));
  std::vector<json> together;
  for (auto& f : futs) together.push_back(f.get());
  EXPECT_EQ(metric(batching, "rar_batches_total"), 1);
  for (size_t i = 0; i < kMixedRequests.size(); ++i) {
    const int64_t before = metric(alone, "rar_batches_total");
    auto one = generate(alone, kMixedRequests[i]);
    EXPECT_EQ(metric(alone, "rar_batches_total"), before + 1) << "request " << i << " alone";
    ASSERT_EQ(one["images"].size(), together[i]["images"].size()) << i;
    EXPECT_EQ(one["classes"], together[i]["classes"]) << i;
    for (size_t k = 0; k < one["images"].size(); ++k)
      EXPECT_EQ(one["images"][k], together[i]["images"][k]) << "request " << i << " image " << k;
  }
}
}  // namespace

TEST(Serve, ConcurrentMixedRequestsBatchTogetherAndEqualThemselvesAlone) {
  serve::SchedulerOptions so;
  so.max_wait_ms = 0;
  TestServer alone(so);
  expect_batched_equal_alone(so, alone);
}

// With --speculative, batches of few images take speculative decoding; on the static window every
// image advances on its own, so a request gets the images it gets alone (here every batch is small
// enough); a batch of more images goes one token per step.
TEST(Serve, SpeculativeSmallBatchesEqualThemselvesAlone) {
  serve::SchedulerOptions so;
  so.max_wait_ms = 0;
  so.engine.engine = "static", so.engine.speculative = 4, so.speculative_images = 8;
  TestServer alone(so, 9);
  expect_batched_equal_alone(so, alone);
  const int64_t before = metric(alone, "rar_speculative_batches_total");
  EXPECT_EQ(before, 4);  // the requests alone
  generate(alone, {{"class", 1}, {"n", 9}, {"seed", 9}});  // 9 images: more than 8, one token per step
  EXPECT_EQ(metric(alone, "rar_speculative_batches_total"), before);
  generate(alone, {{"class", 1}, {"n", 8}, {"seed", 9}});
  EXPECT_EQ(metric(alone, "rar_speculative_batches_total"), before + 1);
}


// ---------------------------------------------------------------- hostile clients (loopback)

namespace {

// A raw TCP connection to the test server (what a misbehaving client sends is not HTTP a client
// library would write).
struct Raw {
  int fd = -1;
  explicit Raw(int port, int recv_timeout_ms = 5000) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{recv_timeout_ms / 1000, (recv_timeout_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  ~Raw() {
    if (fd >= 0) ::close(fd);
  }
  bool send(const std::string& d) {
    size_t at = 0;
    while (at < d.size()) {
      const ssize_t n = ::send(fd, d.data() + at, d.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return false;
      at += static_cast<size_t>(n);
    }
    return true;
  }
  // Everything until the server closes (or the receive timeout).
  std::string read_all() {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  // Whether the server has closed this connection (EOF or reset) within the receive timeout.
  bool closed_by_server() {
    char c;
    const ssize_t n = ::recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }
};

int status_of(const std::string& response) {
  return response.rfind("HTTP/1.", 0) == 0 && response.size() >= 12 ? std::atoi(response.c_str() + 9) : 0;
}

std::string body_of(const std::string& response) {
  const auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

int64_t rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  return 0;
}

bool health_ok(const TestServer& s) {
  httplib::Client c("127.0.0.1", s.port);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(5, 0);
  auto r = c.Get("/health");
  return r && r->status == 200 && r->body == "ok\n";
}

std::string post(const std::string& body, const std::string& extra_headers = "",
                 const std::string& type = "application/json") {
  return "POST /v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" + body;
}

}  // namespace

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

  // a client that hangs up while its request is queued: the request takes no rows (its 3 images
  // are counted as cancelled when the batch forms, 3 s after it arrived, and never generated)
  const int64_t batches = s.scheduler->stats().batches;
  {
    Raw c(s.port);
    const std::string body = R"({"class": 1, "n": 3})";
    ASSERT_TRUE(c.send("POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body));
    for (int i = 0; i < 200 && s.scheduler->stats().queued_images == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(s.scheduler->stats().queued_images, 3);
  }  // closed: the client went away
  for (int i = 0; i < 200 && s.scheduler->stats().cancelled_rows == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(s.scheduler->stats().cancelled_rows, 3);
  EXPECT_EQ(s.scheduler->stats().queued_images, 0);
  EXPECT_EQ(s.scheduler->stats().batches, batches);  // nothing generated for nobody
  EXPECT_TRUE(health_ok(s));  // still serving
}

// A header flood (a request whose header lines never end) is refused once it outgrows the
// connection's fixed memory, /health answers meanwhile and after, and the process's memory does
// not follow the flood.
TEST(ServeHostile, HeaderFloodIsRefusedAndMemoryStaysBounded) {
  TestServer s;
  const int64_t before = rss_kib();
  Raw flood(s.port);
  ASSERT_TRUE(flood.send("GET /health HTTP/1.1\r\nHost: x\r\n"));
  const std::string line = "X-Flood: " + std::string(1000, 'a') + "\r\n";
  size_t sent = 0;
  while (sent < (64u << 20) && flood.send(line)) sent += line.size();
  EXPECT_LT(sent, 4u << 20) << "the server kept reading a header flood";
  const std::string answer = flood.read_all();
  EXPECT_TRUE(answer.empty() || status_of(answer) == 431 || status_of(answer) == 413) << answer.substr(0, 200);
  EXPECT_TRUE(health_ok(s));
  EXPECT_LT(rss_kib() - before, 64 * 1024) << "RSS grew with the flood";
}

// Slow clients (a byte every 100 ms, headers that never end) hold no thread: /health answers
// while 300 of them are connected, and each is cut once its request has taken longer than the
// read timeout.
TEST(ServeHostile, SlowClientsAreCutAndHealthStillAnswers) {
  TestServer s({}, 8, [](serve::ServerOptions& o) { o.read_timeout_s = 1; });
  std::vector<std::unique_ptr<Raw>> slow;
  for (int i = 0; i < 300; ++i) {
    slow.push_back(std::make_unique<Raw>(s.port, 100));
    slow.back()->send("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
  }
  for (int t = 0; t < 5; ++t) {
    for (auto& c : slow) c->send("a");
    EXPECT_TRUE(health_ok(s)) << "round " << t;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the read timeout
  int cut = 0;
  for (auto& c : slow) {
    c->send("a");
    cut += c->closed_by_server() ? 1 : 0;
  }
  EXPECT_EQ(cut, 300);
  EXPECT_TRUE(health_ok(s));
  auto m = httplib::Client("127.0.0.1", s.port).Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("rar_slow_requests_cut_total 300"), std::string::npos) << m->body;
}

// Beyond the connection limit a request gets 503 with Retry-After (not silence); once the idle
// connections go, requests are served again.
TEST(ServeHostile, ConnectionsBeyondTheLimitGet503) {
  TestServer s({}, 8, [](serve::ServerOptions& o) { o.max_connections = 20; });
  std::vector<std::unique_ptr<Raw>> idle;
  for (int i = 0; i < 25; ++i) idle.push_back(std::make_unique<Raw>(s.port));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Raw one(s.port);
  ASSERT_TRUE(one.send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  const std::string r = one.read_all();
  EXPECT_EQ(status_of(r), 503) << r;
  EXPECT_NE(r.find("Retry-After: 1"), std::string::npos) << r;
  EXPECT_NE(body_of(r).find("too many connections"), std::string::npos) << r;
  idle.clear();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_TRUE(health_ok(s));
}

// Malformed requests of every kind are 400 naming what is wrong, never 500; JSON that goes out
// replaces bytes that are not UTF-8; a body in curl's default content type counts to 64 KiB.
TEST(ServeHostile, MalformedRequestsAre400NeverA500) {
  TestServer s({}, 8, [](serve::ServerOptions& o) { o.class_names = {"zero", std::string("bad\xff\xfe", 5)}; });
  auto send = [&](const std::string& raw) {
    Raw c(s.port, 20000);
    c.send(raw);
    return c.read_all();
  };
  struct Case {
    std::string raw, needle;
  };
  const std::vector<Case> cases = {
      {post("{\"class\": 1, \"seed\": \"\xff\xfe\"}"), "not valid JSON"},
      {post("{\"class\": 1, \"class\": 2}"), "field 'class' is given twice"},
      {post("{\"class\": 1}", "Content-Length: 99\r\n"), "Content-Length"},
      {"POST /v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -5\r\n\r\n{}", ""},
      {post("{\"class\": 1, \"n\": 2.5}"), "field 'n'"},
      {post("[1, 2]"), "expected a JSON object"},
  };
  for (const auto& c : cases) {
    const std::string r = send(c.raw);
    EXPECT_EQ(status_of(r), 400) << c.raw.substr(0, 120) << "\n-> " << r.substr(0, 300);
    if (!c.needle.empty()) EXPECT_NE(r.find(c.needle), std::string::npos) << r.substr(0, 300);
  }
  // 10 KB of JSON sent the way `curl -d` sends it (application/x-www-form-urlencoded)
  const std::string padded = "{\"class\": 0" + std::string(10000, ' ') + "}";
  const std::string ok = send(post(padded, "", "application/x-www-form-urlencoded"));
  EXPECT_EQ(status_of(ok), 200) << ok.substr(0, 300);
  // class names that are not UTF-8 still make a valid /v1/info
  const std::string info = send("GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(status_of(info), 200) << info.substr(0, 300);
  const auto j = json::parse(body_of(info));
  EXPECT_EQ(j["class_names"][1].get<std::string>().substr(0, 3), "bad");
}

// A second server on a port in use is a one-line error at start (no SO_REUSEPORT: requests never
// alternate between two models).
TEST(ServeHostile, PortInUseIsAnError) {
  TestServer s;
  serve::ServerOptions o;
  o.port = s.port;
  o.limits.num_classes = s.g.cfg.classes;
  serve::Server second(*s.scheduler, o);
  EXPECT_RAR_ERROR(second.bind(), "another server holds the port");
}

// `rar serve` stops within a few seconds of SIGTERM while a slow client is connected, and a
// server whose worker threads cannot start exits 1 with one line (no banner, no hang).
// `rar serve` as its own process (the CLI's defaults, as a user starts it), on a port the banner names.
struct ServeProcess {
  TempDir dir;
  std::string log = dir / "serve.log";
  pid_t pid = -1;
  int port = 0;
  explicit ServeProcess(const std::string& flags) {
    const std::string args = " serve --generator " + shared_ref("tiny_rar.bin") + " --tokenizer " +
                             shared_ref("tiny_vq.bin") + " --port 0 " + flags;
    pid = ::fork();
    if (pid == 0) {
      const std::string cmd = std::string("exec ") + RAR_BIN + args + " > " + log + " 2>&1";
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 600 && port == 0 && pid > 0; ++i) {  // the banner names the port
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const std::string text = read_bytes(log);
      const auto at = text.find("http://127.0.0.1:");
      if (at != std::string::npos) port = std::atoi(text.c_str() + at + 17);
    }
  }
  // SIGTERM, then up to 10 s for it to exit; its exit status (-1: killed after the 10 s)
  int stop() {
    if (pid <= 0) return -1;
    ::kill(pid, SIGTERM);
    int status = -1;
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    pid = -1;
    return -1;
  }
  ~ServeProcess() {
    if (pid > 0) stop();
  }
};

// The service's promise out of the box: `rar serve` and `rar sample` started with their defaults
// (device and precision: bf16 on CUDA, fp32 on the CPU; the generator's own sampling settings)
// give the same images for the same class and seed. On the GPU machine this compares the bf16
// paths, which the in-process tests above (fp32) do not.
TEST(Serve, DefaultsGiveTheImagesOfRarSampleWithItsDefaults) {
  ServeProcess p("--threads 2");
  ASSERT_GT(p.port, 0) << read_bytes(p.log);
  httplib::Client c("127.0.0.1", p.port);
  c.set_read_timeout(120, 0);
  auto r = c.Post("/v1/generate", R"({"class": 2, "n": 2, "seed": 11})", "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  expect_rar_sample_images(json::parse(r->body), "--seed 11", 2, 2);
  EXPECT_EQ(p.stop(), 0) << read_bytes(p.log);
}

TEST(ServeHostile, SigtermStopsWithASlowClientAndFailedThreadsExitOne) {
  ServeProcess p("--device cpu --threads 2");
  const int port = p.port;
  ASSERT_GT(port, 0) << read_bytes(p.log);
  Raw slow(port);
  slow.send("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(p.stop(), 0) << "not exited 0 within 10 s of SIGTERM: " << read_bytes(p.log);
  EXPECT_NE(read_bytes(p.log).find("rar serve: stopped"), std::string::npos) << read_bytes(p.log);

  // worker threads that cannot start under an address-space cap (a sanitizer build cannot map its
  // shadow memory under such a cap: there this half is not run)
  if (run_shell("(ulimit -v 4000000 && exec " + std::string(RAR_BIN) + " --version) 2>&1").status != 0) return;
  auto r = run_shell("ulimit -v 4000000; " + std::string(RAR_BIN) + " serve --generator " + shared_ref("tiny_rar.bin") +
                     " --tokenizer " + shared_ref("tiny_vq.bin") + " --device cpu --port 0 --threads 1000 2>&1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("cannot start 1000 worker threads"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("http://"), std::string::npos) << "the banner printed: " << r.output;
}
