// cmd_serve_unavailable.cpp — `rar serve` in a build without libmicrohttpd: the command exists and
// says what the build lacks. (Builds with it compile cmd_serve.cpp instead.)
#include "cli/commands.h"
#include "util/error.h"

namespace rar::cli {

void add_serve(CLI::App& app) {
  auto* c = app.add_subcommand("serve", "Serve generation over HTTP (not in this build)");
  c->allow_extras();
  c->callback([] { fail("rar serve: this build has no HTTP server (install libmicrohttpd-dev and rebuild)"); });
}

}  // namespace rar::cli
