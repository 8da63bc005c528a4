// TarDirectory: a directory tree as a tar archive, the build context that a container engine's
// image build (Docker Engine API POST /build) takes as its request body.
//
// The archive is POSIX ustar, with a pax extended header before an entry whose name or link target
// does not fit in ustar's fields. It holds directories, regular files (their permission bits kept:
// an executable stays executable) and symbolic links (as links, their target as it is); sockets,
// fifos and devices are left out. Every entry is owned by 0:0 and keeps its modification time.
// Names are relative to the directory, without a leading "./"; entries come in name order, so the
// same tree gives the same archive.
//
// Thread-safe: it shares nothing.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"

namespace bluegreen::runtime {

// The tar archive of everything under `dir` except the top-level entries named in `exclude`
// (e.g. ".git"). Errors: NotFound when `dir` is not a directory; ResourceExhausted when the archive
// would be larger than `max_bytes`; Internal when a file cannot be read.
Result<std::string> TarDirectory(const std::string& dir, const std::vector<std::string>& exclude,
                                 size_t max_bytes);

}  // namespace bluegreen::runtime
