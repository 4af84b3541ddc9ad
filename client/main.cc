// hapi-client: classify images, generate load, and operate the optimizer.
#include <cstdio>
#include <set>
#include <string>

#include "CLI/CLI.hpp"
#include "client/cli.h"
#include "client/commands.h"
#include "core/fashion_mnist.h"

namespace {

namespace client = hapi::client;

void AddSharedOptions(CLI::App& app, client::Connection* conn, std::string* data_dir) {
  app.add_option("--target", conn->target, "Server address host:port")->capture_default_str();
  app.add_option("--token", conn->token, "Operator token for mutating calls");
  app.add_option("--token_file", conn->token_file, "Read the operator token from a file");
  app.add_flag("--tls", conn->tls, "Use TLS (implied by the four options below)");
  app.add_option("--ca_cert", conn->ca_cert,
                 "PEM root certificates the server's must chain to (default: the system's)");
  app.add_option("--client_cert", conn->client_cert,
                 "PEM client certificate chain, for servers that require one (mutual TLS)");
  app.add_option("--client_key", conn->client_key, "PEM private key of --client_cert");
  app.add_option("--tls_server_name", conn->tls_server_name,
                 "Name to verify in the server certificate instead of --target's host");
  app.add_option("--timeout", conn->timeout_s, "RPC timeout in seconds (0: none)")
      ->capture_default_str();
  app.add_option("--lb_policy", conn->lb_policy,
                 "gRPC load-balancing policy, e.g. round_robin across a headless Service's pods");
  app.add_option("--data_dir", *data_dir,
                 "Fashion-MNIST directory (for --idx, bench, export-samples)");
}

// The first word that is neither a shared option, nor its value, nor a
// subcommand of `app`; empty if none. CLI11 would report it as a missing
// subcommand, which sends the user looking in the wrong place.
std::string UnknownSubcommand(const CLI::App& app, int argc, char** argv) {
  std::set<std::string> takes_value;
  for (const CLI::Option* option : app.get_options()) {
    if (option->get_expected_min() == 0) continue;
    for (const std::string& name : option->get_lnames()) takes_value.insert("--" + name);
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind('-', 0) == 0) {
      if (takes_value.count(arg)) ++i;
      continue;
    }
    for (const CLI::App* sub : app.get_subcommands({})) {
      if (sub->get_name() == arg) return "";
    }
    return arg;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hapi-client: classify images with a HAPI server and operate the optimizer"};
  app.require_subcommand(1);
  client::Connection conn;
  std::string data_dir = hapi::kDefaultFashionMnistDir;
  AddSharedOptions(app, &conn, &data_dir);
  int exit_status = 0;
  client::AddClassifyCommand(app, conn, data_dir);
  client::AddBenchCommand(app, conn, data_dir);
  client::AddHealthCommand(app, conn, &exit_status);
  client::AddStatusCommand(app, conn);
  client::AddLoadVariantCommand(app, conn);
  client::AddDevicesCommand(app, conn);
  client::AddVariantsCommand(app, conn);
  client::AddJobsCommand(app, conn);
  client::AddExportSamplesCommand(app, data_dir);

  if (std::string unknown = UnknownSubcommand(app, argc, argv); !unknown.empty()) {
    std::fprintf(stderr, "hapi-client: unknown subcommand '%s' (see hapi-client --help)\n",
                 unknown.c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);  // runs the subcommand's callback
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hapi-client: %s (see --help)\n", e.what());
    return e.get_exit_code() == 0 ? 2 : e.get_exit_code();
  } catch (const client::CliError& e) {
    std::fprintf(stderr, "hapi-client: %s\n", e.message.c_str());
    return e.code;
  }
  return exit_status;
}
