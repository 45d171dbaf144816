"""`ecoscale lab evaluate`: the live evaluation on the lab (trace compression, planning, a
daemon process, a sampler, accounting, the report). Uses the lab, the profiler, the daemon's
command and the replay; nothing below imports it."""
