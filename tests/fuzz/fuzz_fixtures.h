// What the fuzz targets that go past parsing share: a small fixed model (the
// fake's manifest), an analytic device for it, a calibration table for it,
// and checks of what the latency model and the design search make of them.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/calibration_table.h"
#include "core/design_search.h"
#include "core/latency_model.h"
#include "core/sla.h"
#include "google/protobuf/message.h"
#include "hapi/v1/model.pb.h"

namespace hapi::fuzz {

// The fake model's manifest (core/fake_model.h) with `num_stages` stages and
// exits and `num_classes` classes.
v1::ModelManifest FakeManifest(int num_stages = 6, int num_classes = 10);

// `num_samples` samples spread over [0, 1] answered as the fake model answers
// them (FakeProbabilities), every seventh with a wrong true label so that no
// exit is perfect. `manifest` must have matching exits and stages.
CalibrationTable SyntheticTable(const v1::ModelManifest& manifest, int num_samples);

// A latency model from an analytic profile of `manifest` (1 GMAC/s, 1 us per
// layer), or the error LatencyModel::Create gives.
absl::StatusOr<LatencyModel> AnalyticLatency(const v1::ModelManifest& manifest);

// TextFormat without its error log: fuzz inputs are mostly not valid text.
bool ParseTextProto(absl::string_view text, google::protobuf::Message* message);

// Predicts a few designs (the final exit alone, every early exit at a low and
// a high threshold) under `policy` and checks what a prediction promises:
// accuracy and exit ratios in [0, 1] and summing up, paths sorted, latencies
// not negative or NaN. `latency` and `table` must agree on exits.
void CheckPredictions(const LatencyModel& latency, const CalibrationTable& table,
                      ExitPolicy policy);

// Runs `search` over `table` for `sla` on a small threshold grid and checks
// the answer: a design the SLA judge accepts, FAILED_PRECONDITION (no design
// meets it) or INVALID_ARGUMENT (no usable threshold grid).
void CheckSearch(const DesignSearch& search, const CalibrationTable& table,
                 const LatencyModel& latency, const Sla& sla, ExitPolicy policy,
                 bool per_exit_thresholds, uint64_t seed);

}  // namespace hapi::fuzz
