// edgekit-host BUNDLE IMAGE PROMPT [--image IMAGE2 ...] [--think|--no-think] [--max-new-tokens N] [--threads N] [--json]
// Answers one question about one image (or several cameras: IMAGE, then each --image, in order) with a bundle,
// through the edgekit_host C API; prints the answer and per-stage timings (stderr), or one JSON object (--json).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "edgekit_host.h"

namespace {

struct Collected {
    std::string text;
    std::vector<int32_t> ids;
    bool stream = true;
};

int on_token(const char * piece, size_t length, int32_t id, void * user) {
    auto * c = static_cast<Collected *>(user);
    c->text.append(piece, length);
    c->ids.push_back(id);
    if (c->stream) {
        std::fwrite(piece, 1, length, stdout);
        std::fflush(stdout);
    }
    return 0;
}

// The answer's bytes as valid UTF-8: each ill-formed sequence (a token may end inside a character) becomes U+FFFD per
// its maximal subpart (Unicode 3.9, table 3-7), exactly as Python's bytes.decode("utf-8", errors="replace") does, so
// the JSON is valid and equals edgekit's.
std::string utf8_replaced(const std::string & s) {
    std::string out;
    const auto * b = reinterpret_cast<const unsigned char *>(s.data());
    size_t i = 0, n = s.size();
    while (i < n) {
        unsigned char c = b[i];
        if (c < 0x80) { out += char(c); ++i; continue; }
        int len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        unsigned char lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;  // the second byte's allowed range
        unsigned char hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        size_t k = 1;
        while (len && k < size_t(len) && i + k < n) {
            unsigned char cc = b[i + k];
            if (cc < (k == 1 ? lo : 0x80) || cc > (k == 1 ? hi : 0xBF)) break;
            ++k;
        }
        if (len && k == size_t(len)) out.append(s, i, k);
        else out += "\xEF\xBF\xBD";
        i += len ? k : 1;
    }
    return out;
}

std::string json_string(const std::string & raw) {
    std::string s = utf8_replaced(raw);
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') { out += '\\'; out += char(c); }
        else if (c == '\n') out += "\\n";
        else if (c < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out += b; }
        else out += char(c);
    }
    return out + "\"";
}

int usage(const char * msg) {
    std::fprintf(stderr, "%s\nusage: edgekit-host BUNDLE IMAGE PROMPT [--image IMAGE2 ...] [--think|--no-think] "
                         "[--max-new-tokens N] [--threads N] [--json]\n", msg);
    return 2;
}

}  // namespace

int main(int argc, char ** argv) {
    std::vector<std::string> positional, more_images;
    ek_ask_options ask;
    ek_ask_options_default(&ask);
    ek_open_options open;
    ek_open_options_default(&open);
    bool as_json = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto number = [&](int32_t & into) {
            if (i + 1 >= argc) return false;
            char * end = nullptr;
            long v = std::strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1 << 20) return false;
            into = int32_t(v);
            return true;
        };
        if (a == "--think") ask.think = 1;
        else if (a == "--no-think") ask.think = 0;
        else if (a == "--json") as_json = true;
        else if (a == "--max-new-tokens") { if (!number(ask.max_new_tokens)) return usage("--max-new-tokens needs a whole number >= 1"); }
        else if (a == "--threads") { if (!number(open.n_threads)) return usage("--threads needs a whole number >= 1"); }
        else if (a == "--image") { if (i + 1 >= argc) return usage("--image needs a file"); more_images.push_back(argv[++i]); }
        else if (a.rfind("--", 0) == 0) return usage(("unknown option " + a).c_str());
        else positional.push_back(a);
    }
    if (positional.size() != 3) return usage("expected BUNDLE IMAGE PROMPT");

    ek_status status;
    ek_session * session = ek_open(positional[0].c_str(), &open, &status);
    if (!session) {
        std::fprintf(stderr, "edgekit-host: %s: %s\n", ek_status_name(status), ek_last_error());
        return 1;
    }
    std::vector<std::string> paths{positional[1]};
    paths.insert(paths.end(), more_images.begin(), more_images.end());
    std::vector<ek_image> images;
    auto free_images = [&] { for (ek_image & im : images) ek_image_free(const_cast<uint8_t *>(im.rgb)); };
    for (const std::string & path : paths) {
        uint8_t * rgb = nullptr;
        int32_t w = 0, h = 0;
        status = ek_image_load(session, path.c_str(), &rgb, &w, &h);
        if (status != EK_OK) {
            std::fprintf(stderr, "edgekit-host: %s\n", ek_last_error());
            free_images();
            ek_close(session);
            return 2;
        }
        images.push_back(ek_image{rgb, w, h});
    }
    int32_t w = images[0].width, h = images[0].height;
    Collected out;
    out.stream = !as_json;
    ek_timings t{};
    status = ek_ask_images(session, images.data(), int32_t(images.size()), positional[2].c_str(), &ask, on_token, &out, &t);
    free_images();
    ek_close(session);
    if (status != EK_OK) {
        std::fprintf(stderr, "\nedgekit-host: %s: %s\n", ek_status_name(status), ek_last_error());
        return 1;
    }
    if (as_json) {
        std::string ids;
        for (size_t i = 0; i < out.ids.size(); ++i) ids += (i ? "," : "") + std::to_string(out.ids[i]);
        std::printf("{\"answer\": %s, \"token_ids\": [%s], \"image\": [%d, %d], \"timings_ms\": {\"preprocess\": %.3f, "
                    "\"vision\": %.3f, \"prefill\": %.3f, \"decode\": %.3f, \"total\": %.3f}, \"prompt_tokens\": %d}\n",
                    json_string(out.text).c_str(), ids.c_str(), w, h, t.preprocess_ms, t.vision_ms, t.prefill_ms,
                    t.decode_ms, t.total_ms, t.prompt_tokens);
    } else {
        std::printf("\n");
        std::fprintf(stderr, "%d prompt tokens, %d generated; preprocess %.1f ms, vision %.1f ms, prefill %.1f ms, "
                             "decode %.1f ms (%.1f tokens/s), total %.1f ms\n",
                     t.prompt_tokens, t.generated_tokens, t.preprocess_ms, t.vision_ms, t.prefill_ms, t.decode_ms,
                     t.generated_tokens > 1 ? (t.generated_tokens - 1) * 1e3 / t.decode_ms : 0.0, t.total_ms);
    }
    return 0;
}
