# The shift scenario's timeline (bench/shift_scenario.sh): the live
# disagreement with the full network and its upper bound against the SLA's
# limit, over requests sent; the shift, drift detections and variant swaps
# marked. Variables (gnuplot -e):
#   timeline  hapi-client bench --timeline CSV
#   out       the image to write; format: svg (default) or png
#   shift_at  requests before the shift
#   sla       the limit on the disagreement (a fraction; < 0: none)
#   detect    requests at the first detection after the shift (< 0: none)
#   swaps     requests at each variant swap, space-separated ("": none)
#   title_text
#   logy      1 (default): a logarithmic y axis, so that a limit of a fraction of a
#             percent and a disagreement of tens of percent both show; 0: linear
if (!exists("format")) format = "svg"
if (!exists("sla")) sla = -1
if (!exists("detect")) detect = -1
if (!exists("swaps")) swaps = ""
if (!exists("title_text")) title_text = ""
if (!exists("logy")) logy = 1
if (format eq "png") {
  set terminal pngcairo size 1100,600 font ",10"
} else {
  set terminal svg size 1100,600 dynamic font ",10"
}
set output out

set datafile separator ","
set datafile missing ""
set key outside bottom center horizontal
set grid ytics lc rgb "#dddddd"
set xlabel "requests sent"
set ylabel "disagreement with the full network (%)"
set title "Live accuracy monitor under a shift: ".title_text
if (logy) {
  set logscale y
  set yrange [0.05:100]
  set format y "%g"
} else {
  set yrange [0:*]
  set offsets 0, 0, graph 0.08, 0
}
# A zero rate has no place on a log axis: a gap.
pct(v) = (logy && v <= 0) ? NaN : 100 * v

# Columns: 1 requests_sent, 2 seconds, 3 shifted, 4 variant, 5 window_samples,
# 6 disagreement_rate, 7 disagreement_upper, 8 max_disagreement,
# 9 drift_detected, 10 drift_exit_p_value, 11 drift_confidence_p_value,
# 12 loop_decisions, 13 throughput_rps.
set arrow 1 from shift_at, graph 0 to shift_at, graph 1 nohead lc rgb "#cc6600" lw 2 dt 2
set label 1 "shift" at shift_at, graph 0.10 offset 0.5, 0 tc rgb "#cc6600"
if (detect >= 0) {
  set arrow 2 from detect, graph 0 to detect, graph 1 nohead lc rgb "#aa0000" lw 1.5 dt 3
  set label 2 "detected" at detect, graph 0.06 offset 0.5, 0 tc rgb "#aa0000"
}
i = 10
do for [s in swaps] {
  set arrow i from real(s), graph 0 to real(s), graph 1 nohead lc rgb "#008800" lw 2
  set label i "swap" at real(s), graph 0.02 offset 0.5, 0 tc rgb "#008800"
  i = i + 1
}

# Drift flagged in a row: a mark along the top of the plot (the second y
# axis spans the plot's height).
set y2range [0:1]
unset y2tics
drift_y(f) = (f == 1) ? 0.97 : NaN
plot timeline skip 1 using 1:(pct($7)) with lines lw 2 lc rgb "#1f77b4" title "upper bound (live)", \
     timeline skip 1 using 1:(pct($6)) with lines lw 1 lc rgb "#7f7f7f" title "disagreement rate (window)", \
     (sla >= 0 ? 100 * sla : NaN) with lines lw 2 lc rgb "#d62728" dt 4 title "SLA limit", \
     timeline skip 1 using 1:(drift_y($9)) axes x1y2 with points pt 7 ps 0.6 lc rgb "#aa0000" title "drift detected", \
     timeline skip 1 using 1:(NaN) with lines lw 2 lc rgb "#008800" title "variant swap"
