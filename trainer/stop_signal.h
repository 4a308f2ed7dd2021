// SIGINT and SIGTERM (Ctrl-C, Slurm preemption, `kill`) ask the training loop to stop after
// the step in progress; the loop then writes a checkpoint and exits with status 0.
#pragma once

namespace dilatron {

void install_stop_signal_handlers();
bool stop_requested();
// Which signal asked (0 if none), for the log line.
int stop_signal_number();

}  // namespace dilatron
