#include "sha256.h"

#include <openssl/evp.h>

#include <unistd.h>

#include <cerrno>
#include <new>
#include <vector>

#include "errors.h"

namespace ek {
namespace {

struct Digest {
    Digest() : ctx(EVP_MD_CTX_new()) {
        if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) throw std::bad_alloc();
    }
    ~Digest() { EVP_MD_CTX_free(ctx); }
    Digest(const Digest &) = delete;  // owns the OpenSSL context
    Digest & operator=(const Digest &) = delete;
    void update(const void * data, size_t n) {
        if (EVP_DigestUpdate(ctx, data, n) != 1) throw Error(EK_ERR_INTERNAL, "sha256: digest update failed");
    }
    std::string hex() {
        unsigned char out[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        if (EVP_DigestFinal_ex(ctx, out, &n) != 1) throw Error(EK_ERR_INTERNAL, "sha256: digest final failed");
        static const char * digits = "0123456789abcdef";
        std::string s;
        for (unsigned i = 0; i < n; ++i) { s += digits[out[i] >> 4]; s += digits[out[i] & 15]; }
        return s;
    }
    EVP_MD_CTX * ctx;
};

}  // namespace

std::string sha256_hex(const std::string & data) {
    Digest d;
    d.update(data.data(), data.size());
    return d.hex();
}

std::string sha256_fd(int fd, const std::string & label) {
    Digest d;
    std::vector<char> buf(1 << 20);
    off_t offset = 0;
    while (true) {
        ssize_t n = pread(fd, buf.data(), buf.size(), offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw Error(EK_ERR_IO, label + ": read error");
        if (n == 0) break;
        d.update(buf.data(), size_t(n));
        offset += n;
    }
    return d.hex();
}

}  // namespace ek
