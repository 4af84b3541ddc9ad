#include "core/model_report.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace hapi {

double FinalErrorsFixedByEarlierExit(const CalibrationTable& table) {
  int final_exit = table.num_exits() - 1, errors = 0, fixed = 0;
  for (int s = 0; s < table.num_samples(); ++s) {
    if (table.correct(final_exit, s)) continue;
    ++errors;
    for (int e = 0; e < final_exit; ++e) {
      if (table.correct(e, s)) {
        ++fixed;
        break;
      }
    }
  }
  return errors == 0 ? 0.0 : static_cast<double>(fixed) / errors;
}

void FillExitReports(const CalibrationTable& validation, const CalibrationTable& test,
                     v1::ModelManifest* manifest) {
  v1::TrainingReport* report = manifest->mutable_report();
  report->clear_exits();
  for (const v1::ExitInfo& e : manifest->exits()) {
    v1::ExitReport* r = report->add_exits();
    r->set_exit_index(e.index());
    r->set_name(e.name());
    r->mutable_accuracy()->set_validation(validation.Accuracy(e.index()));
    r->mutable_accuracy()->set_test(test.Accuracy(e.index()));
    r->set_cumulative_macs_fraction(e.cumulative_macs_fraction());
    r->set_head_macs_fraction(static_cast<double>(e.macs()) /
                              static_cast<double>(manifest->backbone_macs()));
  }
  report->set_final_errors_fixed_by_earlier_exit(FinalErrorsFixedByEarlierExit(test));
}

std::string FormatTrainingReport(const v1::ModelManifest& m) {
  const v1::TrainingReport& r = m.report();
  std::string out = absl::StrFormat("# Model `%s`\n\n", m.name());
  absl::StrAppendFormat(&out,
                        "Backbone: stem %d channels, widths [%s], blocks per group [%s]; "
                        "%d stages, %d exits (the last is the final classifier).\n",
                        m.backbone().stem_channels(), absl::StrJoin(m.backbone().widths(), ", "),
                        absl::StrJoin(m.backbone().blocks_per_group(), ", "), m.stages_size(),
                        m.exits_size());
  absl::StrAppendFormat(&out, "Full network: %.2f M MACs, %d parameters, %.2f MB of weights.\n",
                        m.full_network_macs() / 1e6, r.num_parameters(), r.weights_bytes() / 1e6);
  absl::StrAppendFormat(&out,
                        "Data: train %d / validation %d (split seed %d) / test %d. Seed %d, "
                        "backbone %d epochs, exits %d epochs (Adam, peak rate %g%s).\n\n",
                        m.split().train(), m.split().validation(), m.split().split_seed(),
                        m.split().test(), m.training().seed(), m.training().backbone_epochs(),
                        m.training().exit_epochs(), m.training().exit_learning_rate(),
                        m.training().exit_distillation() > 0
                            ? absl::StrFormat(", distilled from the final classifier: weight %g, "
                                              "temperature %g",
                                              m.training().exit_distillation(),
                                              m.training().distillation_temperature())
                            : "");
  out +=
      "| exit | after stage | val acc | test acc | MACs to here (of full) | head MACs (of "
      "backbone) |\n";
  out += "|---|---|---|---|---|---|\n";
  for (int i = 0; i < r.exits_size(); ++i) {
    const v1::ExitReport& e = r.exits(i);
    const v1::ExitInfo& info = m.exits(i);
    absl::StrAppendFormat(&out, "| %s | %d | %.2f%% | %.2f%% | %.1f%% | %.2f%% |\n", e.name(),
                          info.after_stage(), 100 * e.accuracy().validation(),
                          100 * e.accuracy().test(), 100 * e.cumulative_macs_fraction(),
                          100 * e.head_macs_fraction());
  }
  absl::StrAppendFormat(&out,
                        "\nOf the test samples the final classifier gets wrong, %.1f%% are "
                        "classified correctly by at least one earlier exit.\n",
                        100 * r.final_errors_fixed_by_earlier_exit());
  if (r.backbone_epoch_seconds_size() > 0 || r.exit_epoch_seconds_size() > 0) {
    double backbone_total = 0, exit_total = 0;
    for (double s : r.backbone_epoch_seconds()) backbone_total += s;
    for (double s : r.exit_epoch_seconds()) exit_total += s;
    absl::StrAppendFormat(
        &out,
        "\nTraining time: backbone %.0f s (%.1f s/epoch), exits %.0f s "
        "(%.1f s/epoch), %d threads.\n",
        backbone_total, backbone_total / std::max(1, r.backbone_epoch_seconds_size()), exit_total,
        exit_total / std::max(1, r.exit_epoch_seconds_size()), m.training().threads());
  }
  return out;
}

}  // namespace hapi
