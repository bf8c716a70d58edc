#include "files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.h"

namespace ek {
namespace {

const char * describe(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a named pipe (FIFO)";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    return "not a regular file";
}

// fd must be a regular file; it is switched back to blocking reads (O_NONBLOCK only kept a FIFO's open from waiting).
int regular_or_throw(int fd, const std::string & label) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        throw Error(EK_ERR_IO, label + ": cannot be read (" + std::strerror(e) + ")");
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(EK_ERR_IO, label + ": is " + describe(st.st_mode) + ", not a regular file");
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

}  // namespace

int open_beneath(int root_fd, const std::string & rel) {
    int dir = root_fd;
    size_t start = 0;
    while (true) {
        size_t slash = rel.find('/', start);
        std::string part = rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
        if (slash == std::string::npos) {
            int fd = openat(dir, part.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
            int e = errno;
            if (dir != root_fd) ::close(dir);
            if (fd < 0) {
                if (e == ELOOP) throw Error(EK_ERR_INTEGRITY, rel + ": is a symbolic link; a sealed bundle holds no links");
                if (e == ENOENT) throw Error(EK_ERR_INTEGRITY, rel + ": listed in the manifest but missing");
                throw Error(EK_ERR_IO, rel + ": cannot be opened (" + std::strerror(e) + ")");
            }
            return regular_or_throw(fd, rel);
        }
        int next = openat(dir, part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        if (dir != root_fd) ::close(dir);
        if (next < 0)
            throw Error(EK_ERR_INTEGRITY, rel + ": folder '" + part + "' cannot be entered without following a link (" +
                        std::strerror(e) + ")");
        dir = next;
        start = slash + 1;
    }
}

int open_regular(const std::string & path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) throw Error(EK_ERR_IO, path + ": file not found");
        throw Error(EK_ERR_IO, path + ": cannot be opened (" + std::strerror(e) + ")");
    }
    return regular_or_throw(fd, path);
}

std::string read_fd(int fd, size_t max_bytes, const std::string & label) {
    struct stat st;
    if (fstat(fd, &st) != 0) throw Error(EK_ERR_IO, label + ": cannot be read");
    if (size_t(st.st_size) > max_bytes)
        throw Error(EK_ERR_IO, label + ": " + std::to_string(st.st_size) + " bytes, larger than the " +
                    std::to_string(max_bytes) + " the host reads for it");
    std::string out;
    out.resize(size_t(st.st_size));
    size_t done = 0;
    while (done < out.size()) {
        ssize_t n = pread(fd, &out[done], out.size() - done, off_t(done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw Error(EK_ERR_IO, label + ": read error (" + std::strerror(errno) + ")");
        if (n == 0) break;  // shrank while being read
        done += size_t(n);
    }
    out.resize(done);
    return out;
}

}  // namespace ek
