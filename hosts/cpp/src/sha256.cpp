#include "sha256.h"

#include <openssl/evp.h>

#include <cstdio>
#include <memory>
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

std::string sha256_file(const std::string & path) {
    std::unique_ptr<std::FILE, int (*)(std::FILE *)> f(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!f) throw Error(EK_ERR_IO, path + ": cannot be opened");
    Digest d;
    std::vector<char> buf(1 << 20);
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) d.update(buf.data(), n);
    if (std::ferror(f.get())) throw Error(EK_ERR_IO, path + ": read error");
    return d.hex();
}

}  // namespace ek
