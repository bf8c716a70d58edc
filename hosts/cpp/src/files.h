// Opening what the host reads: regular files only (a FIFO, socket, device or directory is refused before any read
// that could block), bounded in size, and inside a bundle never through a link at any path component.
#pragma once

#include <cstddef>
#include <string>

namespace ek {

// A read-only descriptor of the regular file `rel` (normalised, relative) below the directory root_fd, opened one
// component at a time with O_NOFOLLOW. Throws ek::Error naming rel.
int open_beneath(int root_fd, const std::string & rel);

// A read-only descriptor of a regular file the user named (links followed: it is their file). Throws ek::Error.
int open_regular(const std::string & path);

// The whole file behind fd, refused when larger than max_bytes. Throws ek::Error naming `label`.
std::string read_fd(int fd, size_t max_bytes, const std::string & label);

}  // namespace ek
