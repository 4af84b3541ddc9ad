// A load generator for hapi.v1.Inference: closed loop (N clients, each with
// one request in flight) or open loop (a fixed arrival rate, independent of
// how fast answers come back), for a duration or a request count.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "hapi/v1/inference.grpc.pb.h"

namespace hapi {

struct LoadOptions {
  int concurrency = 8;     // closed loop
  double rate = 0;         // > 0: open loop, requests per second
  double duration_s = 10;  // stop after this long ...
  int64_t count = 0;       // ... or after this many requests (> 0)
  double deadline_ms = 0;  // per-request gRPC deadline (0: none)
  bool progress = true;    // live line on stderr
};

struct LoadSample {
  double start_s = 0;    // since the run began
  double latency_s = 0;  // client-side
  double server_s = 0;   // server-side, as the response reports it
  double queue_s = 0;    // of which waiting for a batch
  int code = 0;
  int label = -1, truth = -1, exit_index = -1;
  bool cut_by_deadline = false;
};

struct LoadReport {
  double seconds = 0;
  std::vector<LoadSample> samples;
  double throughput() const { return seconds > 0 ? samples.size() / seconds : 0; }
};

// `images` are raw 28x28 uint8 images with their labels (-1 if unknown);
// requests cycle through them.
LoadReport RunLoad(v1::Inference::Stub* stub, const std::vector<std::string>& images,
                   const std::vector<int>& labels, const LoadOptions& options,
                   const std::string& token);

// A human summary: throughput, latency percentiles, errors by code, exit
// histogram, accuracy.
std::string SummariseLoad(const LoadReport& report);
std::string LoadReportJson(const LoadReport& report);
std::string LoadReportCsv(const LoadReport& report);

}  // namespace hapi
