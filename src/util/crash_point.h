// crash_point.h — named places where an interruption matters (between writing a file and renaming
// it, between the files of a checkpoint, ...), for the interruption tests (tests/torture.sh).
//
//   RAR_CRASH_AT=N    the process kills itself with SIGKILL at the N-th crash point it reaches,
//                     exactly as `kill -9` would, after printing "crash point N: <name>" to stderr
//   RAR_CRASH_LOG=F   appends the name of every crash point reached to file F (to count them)
//
// Unset (always, outside tests), a crash point is one load of a cached flag.
#pragma once

namespace rar {

void crash_point(const char* name);

}  // namespace rar
