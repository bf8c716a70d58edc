// SHA-256 of files and strings as lowercase hex (the digests edgekit's manifest records), through OpenSSL's EVP
// interface: it uses the CPU's SHA instructions where there are some, which matters when a bundle of gigabytes is
// hashed before every load.
#pragma once

#include <string>

namespace ek {

std::string sha256_hex(const std::string & data);
// The file behind fd, read from its start with pread (what is hashed is what a load through the same descriptor
// reads). Throws ek::Error (EK_ERR_IO) naming `label` when it cannot be read.
std::string sha256_fd(int fd, const std::string & label);

}  // namespace ek
