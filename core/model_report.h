// The training report: per-exit accuracy and cost, from calibration tables.
#pragma once

#include <string>

#include "core/calibration_table.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

// Fills manifest->report().exits and final_errors_fixed_by_earlier_exit from
// the two calibration tables (validation and test), keeping other fields.
void FillExitReports(const CalibrationTable& validation, const CalibrationTable& test,
                     v1::ModelManifest* manifest);

// Of the samples the final exit gets wrong, the share some earlier exit gets right.
double FinalErrorsFixedByEarlierExit(const CalibrationTable& table);

// Markdown: configuration, per-exit table, training timings.
std::string FormatTrainingReport(const v1::ModelManifest& manifest);

}  // namespace hapi
