// hapi-client's subcommands. Each Add...Command adds one subcommand to `app`:
// its options, and the callback that runs it once app.parse() has read them.
// The shared options are bound by reference, so they must outlive the parse.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "client/cli.h"

namespace hapi::client {

// Images through hapi.v1.Inference, and the test images they come from
// (classify_commands.cc).
void AddClassifyCommand(CLI::App& app, const Connection& conn, const std::string& data_dir);
void AddBenchCommand(CLI::App& app, const Connection& conn, const std::string& data_dir);
void AddExportSamplesCommand(CLI::App& app, const std::string& data_dir);

// Operating a server and the optimizer (operator_commands.cc). A server that
// answers but is not SERVING is not an error: health reports it as exit
// status 4 through `exit_status`.
void AddHealthCommand(CLI::App& app, const Connection& conn, int* exit_status);
void AddStatusCommand(CLI::App& app, const Connection& conn);
void AddLoadVariantCommand(CLI::App& app, const Connection& conn);
void AddDevicesCommand(CLI::App& app, const Connection& conn);
void AddVariantsCommand(CLI::App& app, const Connection& conn);
void AddJobsCommand(CLI::App& app, const Connection& conn);

}  // namespace hapi::client
