// The C API: a bundle's GGUF decoder and mmproj run by llama.cpp (libllama, libmtmd), the way edgekit's Python
// MtmdPipeline runs them (edgekit/runtime/mtmd_pipeline.py), so both give the same greedy answer:
//   resize (Pillow-exact) -> prompt from the bundle's chat-template frames, image placeholder -> libmtmd's marker
//   -> mtmd_tokenize -> per chunk: text through mtmd_helper_eval_chunk_single, images through mtmd_encode_chunk
//   then mtmd_helper_decode_image_chunk (M-RoPE positions as libmtmd's helper lays them out, continuing from the
//   position it returns) -> greedy tokens at explicit positions, through one reused batch.
// Every entry point catches everything: no exception or abort crosses the C boundary.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>
#include <unistd.h>

#include "edgekit_host.h"
#include "errors.h"
#include "files.h"
#include "image.h"
#include "llama.h"
#include "manifest.h"
#include "mtmd-helper.h"
#include "mtmd.h"
#include "resize.h"

struct ek_session {
    ek::Bundle bundle;
    llama_model * model = nullptr;
    llama_context * ctx = nullptr;
    mtmd_context * mtmd = nullptr;
    const llama_vocab * vocab = nullptr;
    int32_t n_batch = 512;  // as edgekit's LlamaDecoder
    llama_batch step{};     // the decode loop's one-token batch, made once (as LlamaDecoder.advance)
};

namespace {

thread_local std::string g_last_error;
constexpr int32_t kDefaultMaxNewTokens = 64;

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

void quiet_log(enum ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR && text) std::fputs(text, stderr);  // llama.cpp logs every load otherwise
}

int available_cores() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    unsigned n = std::thread::hardware_concurrency();
    return n ? int(n) : 1;
}

template <class F>
ek_status guarded(F && body) {
    try {
        body();
        g_last_error.clear();
        return EK_OK;
    } catch (const ek::Error & e) {
        g_last_error = e.what();
        return e.status;
    } catch (const std::bad_alloc &) {
        g_last_error = "out of memory";
        return EK_ERR_RUNTIME;
    } catch (const std::exception & e) {
        g_last_error = std::string("internal error: ") + e.what();
        return EK_ERR_INTERNAL;
    } catch (...) {
        g_last_error = "internal error: unknown exception";
        return EK_ERR_INTERNAL;
    }
}

bool valid_utf8(const std::string & s) {
    for (size_t i = 0; i < s.size();) {
        unsigned char c = s[i];
        int n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || (n > 0 && i + n >= s.size())) return false;  // a bad lead byte, or cut short
        for (int k = 1; k <= n; ++k) {
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
        }
        i += n + 1;
    }
    return true;
}

std::string rstrip(const std::string & s) {
    size_t end = s.find_last_not_of(" \t\n\r\f\v");
    return end == std::string::npos ? "" : s.substr(0, end + 1);
}

// The prompt text as edgekit.model.chat_frames.prompt_from_frames assembles it: ` /no_think` goes after the
// question unless it already ends with it (which, with MiMo's template, also turns thinking off); the image
// placeholder becomes libmtmd's marker, which libmtmd wraps in <|vision_start|> ... <|vision_end|> itself.
std::string build_prompt(const ek::Bundle & b, const std::string & question, bool think, int32_t images) {
    std::string mark = b.no_think_suffix.substr(b.no_think_suffix.find_first_not_of(' '));
    std::string trimmed = rstrip(question);
    bool has_suffix = trimmed.size() >= mark.size() && trimmed.compare(trimmed.size() - mark.size(), mark.size(), mark) == 0;
    think = think && !(has_suffix && b.suffix_turns_thinking_off);
    if (images < 0 || images > EK_MAX_IMAGES)
        throw ek::Error(EK_ERR_ARGUMENT, "between 0 and " + std::to_string(EK_MAX_IMAGES) + " images per question");
    if (images > 1 && !b.images_in_a_row)
        throw ek::Error(EK_ERR_UNSUPPORTED, "this bundle's chat template does not render several images in a row; "
                        "ask about one image");
    const ek::PromptFrame & f = b.frames.at(std::string(think ? "think" : "no_think") + "/" + (images ? "1" : "0"));
    std::string before = f.before;
    if (images) {
        size_t at = before.find(b.image_placeholder);
        if (at == std::string::npos) throw ek::Error(EK_ERR_MANIFEST, "prompt frame has no image placeholder");
        std::string markers;
        for (int32_t k = 0; k < images; ++k) markers += mtmd_default_marker();
        before.replace(at, b.image_placeholder.size(), markers);
    }
    return before + question + (think || has_suffix ? "" : b.no_think_suffix) + f.after;
}

int32_t argmax(const float * logits, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; ++i) if (logits[i] > logits[best]) best = i;  // the first maximum, as numpy
    return best;
}

void decode_token(ek_session * s, llama_token token, llama_pos pos) {
    llama_batch & batch = s->step;  // n_tokens, seq and logits flags were set when the session opened
    batch.token[0] = token;
    batch.pos[0] = pos;  // explicit, as LlamaDecoder.advance: llama.cpp copies it to every M-RoPE section
    int32_t rc = llama_decode(s->ctx, batch);
    if (rc != 0) throw ek::Error(EK_ERR_RUNTIME, "llama_decode failed (code " + std::to_string(rc) + "); the answer may exceed the context");
}

void ask(ek_session * s, const ek_image * images, int32_t n_images, const char * prompt, const ek_ask_options & opt,
         ek_token_callback on_token, void * user, ek_timings * timings) {
    const ek::Bundle & b = s->bundle;
    if (!prompt) throw ek::Error(EK_ERR_ARGUMENT, "prompt is NULL");
    std::string question(prompt);
    if (!valid_utf8(question)) throw ek::Error(EK_ERR_ARGUMENT, "prompt is not valid UTF-8");
    if (n_images < 0 || n_images > EK_MAX_IMAGES || (n_images && !images))
        throw ek::Error(EK_ERR_ARGUMENT, "n_images must be 0.." + std::to_string(EK_MAX_IMAGES) + " with an images array");
    for (int32_t k = 0; k < n_images; ++k) {
        const ek_image & im = images[k];
        std::string which = n_images > 1 ? "image " + std::to_string(k + 1) + " " : "image ";
        if (!im.rgb || im.width < 1 || im.height < 1)
            throw ek::Error(EK_ERR_ARGUMENT, which + "needs bytes and a positive width and height");
        if (im.width > 16384 || im.height > 16384 || std::max(im.width, im.height) > 200 * std::min(im.width, im.height))
            throw ek::Error(EK_ERR_ARGUMENT, which + std::to_string(im.width) + "x" + std::to_string(im.height) +
                            " is too large or too elongated (sides up to 16384, aspect ratio up to 200)");
    }
    int32_t max_new = opt.max_new_tokens > 0 ? opt.max_new_tokens : kDefaultMaxNewTokens;

    auto t0 = Clock::now();
    std::string text = build_prompt(b, question, opt.think != 0, n_images);
    std::vector<std::vector<uint8_t>> pixels;
    for (int32_t k = 0; k < n_images; ++k)
        pixels.push_back(ek::resize_bicubic(images[k].rgb, images[k].width, images[k].height, b.width, b.height));
    llama_memory_clear(llama_get_memory(s->ctx), true);
    struct Cleanup {
        std::vector<mtmd_bitmap *> bitmaps; mtmd_input_chunks * chunks = nullptr;
        ~Cleanup() { for (mtmd_bitmap * m : bitmaps) if (m) mtmd_bitmap_free(m); if (chunks) mtmd_input_chunks_free(chunks); }
    } cleanup;
    for (auto & px : pixels) cleanup.bitmaps.push_back(mtmd_bitmap_init(uint32_t(b.width), uint32_t(b.height), px.data()));
    cleanup.chunks = mtmd_input_chunks_init();
    mtmd_input_chunks * chunks = cleanup.chunks;
    mtmd_input_text input{text.c_str(), text.size(), false, true};
    std::vector<const mtmd_bitmap *> bitmaps(cleanup.bitmaps.begin(), cleanup.bitmaps.end());
    int32_t rc = mtmd_tokenize(s->mtmd, chunks, &input, bitmaps.data(), bitmaps.size());
    if (rc != 0) throw ek::Error(EK_ERR_RUNTIME, "libmtmd could not tokenize the prompt (code " + std::to_string(rc) + ")");
    int32_t prompt_tokens = int32_t(mtmd_helper_get_n_tokens(chunks));
    if (prompt_tokens + max_new > int32_t(llama_n_ctx(s->ctx)))
        throw ek::Error(EK_ERR_ARGUMENT, "prompt (" + std::to_string(prompt_tokens) + " tokens) plus " + std::to_string(max_new) +
                        " new tokens exceed the context of " + std::to_string(llama_n_ctx(s->ctx)));
    double preprocess_ms = ms_since(t0);

    auto t1 = Clock::now();
    double vision_ms = 0;
    llama_pos n_past = 0;
    size_t n_chunks = mtmd_input_chunks_size(chunks);
    for (size_t i = 0; i < n_chunks; ++i) {
        const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks, i);
        bool last = i + 1 == n_chunks;
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_IMAGE) {
            auto tv = Clock::now();
            if (mtmd_encode_chunk(s->mtmd, chunk) != 0) throw ek::Error(EK_ERR_RUNTIME, "libmtmd failed to encode the image");
            vision_ms += ms_since(tv);
            rc = mtmd_helper_decode_image_chunk(s->mtmd, s->ctx, chunk, mtmd_get_output_embd(s->mtmd), n_past, 0, s->n_batch,
                                                &n_past, nullptr, nullptr);
        } else {
            rc = mtmd_helper_eval_chunk_single(s->mtmd, s->ctx, chunk, n_past, 0, s->n_batch, last, &n_past);
        }
        if (rc != 0) throw ek::Error(EK_ERR_RUNTIME, "llama.cpp failed to evaluate prompt chunk " + std::to_string(i) +
                                     " (code " + std::to_string(rc) + ")");
    }
    const int32_t n_vocab = llama_vocab_n_tokens(s->vocab);
    llama_token token = argmax(llama_get_logits_ith(s->ctx, -1), n_vocab);
    auto t_first = Clock::now();

    int32_t generated = 0;
    bool cancelled = false;
    char piece[256];
    while (!llama_vocab_is_eog(s->vocab, token)) {  // greedy, as LlamaDecoder.generate
        int32_t n = llama_token_to_piece(s->vocab, token, piece, sizeof piece, 0, false);
        ++generated;
        if (on_token && on_token(piece, size_t(n > 0 ? n : 0), token, user) != 0) { cancelled = true; break; }
        if (generated == max_new) break;  // the last token needs no next distribution
        decode_token(s, token, n_past++);
        token = argmax(llama_get_logits_ith(s->ctx, -1), n_vocab);
    }
    if (timings) {
        timings->preprocess_ms = preprocess_ms;
        timings->vision_ms = vision_ms;
        timings->prefill_ms = std::chrono::duration<double, std::milli>(t_first - t1).count() - vision_ms;
        timings->decode_ms = ms_since(t_first);
        timings->total_ms = ms_since(t0);
        timings->prompt_tokens = prompt_tokens;
        timings->generated_tokens = generated;
    }
    if (cancelled) throw ek::Error(EK_ERR_CANCELLED, "stopped by the token callback");
}

void open_session(ek_session * s, const char * dir, const ek_open_options & opt) {
    if (!dir) throw ek::Error(EK_ERR_ARGUMENT, "bundle directory is NULL");
    s->bundle = ek::open_manifest(dir, opt.verify_artifacts != 0);
    if (s->bundle.resample != 3)
        throw ek::Error(EK_ERR_UNSUPPORTED, "preprocessing.resample is " + std::to_string(s->bundle.resample) +
                        "; this host resizes with bicubic (3) only");
    static bool backend_ready = [] {
        llama_log_set(quiet_log, nullptr);
        mtmd_helper_log_set(quiet_log, nullptr);
        llama_backend_init();
        return true;
    }();
    (void)backend_ready;
    if (opt.n_threads < 0 || opt.n_threads > 4 * available_cores())
        throw ek::Error(EK_ERR_ARGUMENT, "n_threads " + std::to_string(opt.n_threads) + ": must be from 1 to " +
                        std::to_string(4 * available_cores()) + " (4 x the cores here), or 0 for every core");
    if (opt.n_ctx < 0 || opt.n_ctx > s->bundle.max_position)
        throw ek::Error(EK_ERR_ARGUMENT, "n_ctx " + std::to_string(opt.n_ctx) + ": must be from 1 to the model's " +
                        std::to_string(s->bundle.max_position) + " positions, or 0 for the bundle's context");
    int threads = opt.n_threads > 0 ? opt.n_threads : available_cores();
    llama_model_params mp = llama_model_default_params();
    // The very files that were hashed: their descriptors, not their names (a rename over a name changes nothing).
    std::string decoder = s->bundle.fd_path(s->bundle.decoder_rel), mmproj = s->bundle.fd_path(s->bundle.mmproj_rel);
    s->model = llama_model_load_from_file(decoder.c_str(), mp);
    if (!s->model) throw ek::Error(EK_ERR_RUNTIME, s->bundle.decoder_rel + ": llama.cpp could not load this GGUF");
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = uint32_t(opt.n_ctx > 0 ? opt.n_ctx : s->bundle.context);
    cp.n_batch = cp.n_ubatch = uint32_t(s->n_batch);
    cp.n_threads = cp.n_threads_batch = threads;
    cp.type_k = cp.type_v = GGML_TYPE_F16;
    s->ctx = llama_init_from_model(s->model, cp);
    if (!s->ctx) throw ek::Error(EK_ERR_RUNTIME, "llama.cpp could not create a context of " + std::to_string(cp.n_ctx) + " tokens");
    s->vocab = llama_model_get_vocab(s->model);
    s->step = llama_batch_init(1, 0, 1);
    s->step.n_tokens = 1;
    s->step.n_seq_id[0] = 1;
    s->step.seq_id[0][0] = 0;
    s->step.logits[0] = 1;
    mtmd_context_params mt = mtmd_context_params_default();
    mt.use_gpu = false;
    mt.print_timings = false;
    mt.n_threads = threads;
    mt.warmup = false;
    mt.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;  // as edgekit's MmprojVision: the CPU kernel rounds to f16
    s->mtmd = mtmd_init_from_file(mmproj.c_str(), s->model, mt);
    if (!s->mtmd) throw ek::Error(EK_ERR_RUNTIME, s->bundle.mmproj_rel + ": libmtmd could not load this mmproj");
}

}  // namespace

extern "C" {

void ek_open_options_default(ek_open_options * o) {
    if (o) *o = ek_open_options{0, 0, 1};
}

void ek_ask_options_default(ek_ask_options * o) {
    if (o) *o = ek_ask_options{0, kDefaultMaxNewTokens};
}

ek_session * ek_open(const char * bundle_dir, const ek_open_options * options, ek_status * error) {
    ek_open_options opt;
    ek_open_options_default(&opt);
    if (options) opt = *options;
    ek_session * s = nullptr;
    ek_status st = guarded([&] {
        s = new ek_session();
        open_session(s, bundle_dir, opt);
    });
    if (st != EK_OK) {
        std::string message = g_last_error;
        ek_close(s);
        s = nullptr;
        g_last_error = message;
    }
    if (error) *error = st;
    return s;
}

ek_status ek_ask_images(ek_session * session, const ek_image * images, int32_t n_images, const char * prompt,
                        const ek_ask_options * options, ek_token_callback on_token, void * user, ek_timings * timings) {
    ek_ask_options opt;
    ek_ask_options_default(&opt);
    if (options) opt = *options;
    return guarded([&] {
        if (!session) throw ek::Error(EK_ERR_ARGUMENT, "session is NULL");
        ask(session, images, n_images, prompt, opt, on_token, user, timings);
    });
}

ek_status ek_ask(ek_session * session, const uint8_t * rgb, int32_t width, int32_t height, const char * prompt,
                 const ek_ask_options * options, ek_token_callback on_token, void * user, ek_timings * timings) {
    if (!rgb && (width || height))
        return guarded([] { throw ek::Error(EK_ERR_ARGUMENT, "width/height given without image bytes"); });
    ek_image one{rgb, width, height};
    return ek_ask_images(session, &one, rgb ? 1 : 0, prompt, options, on_token, user, timings);
}

ek_status ek_image_load(ek_session * session, const char * path, uint8_t ** rgb, int32_t * width, int32_t * height) {
    return guarded([&] {
        if (!path || !rgb || !width || !height) throw ek::Error(EK_ERR_ARGUMENT, "NULL argument to ek_image_load");
        *rgb = nullptr;
        // Decoded here (libpng, libjpeg), never by an external program; a FIFO or directory is refused unread.
        int fd = ek::open_regular(path);
        std::string bytes;
        try {
            bytes = ek::read_fd(fd, ek::kMaxImageFileBytes, path);
        } catch (...) {
            close(fd);
            throw;
        }
        close(fd);
        ek::RgbImage img = ek::decode_image(bytes, path);
        *rgb = static_cast<uint8_t *>(std::malloc(img.pixels.size()));
        if (!*rgb) throw std::bad_alloc();
        std::memcpy(*rgb, img.pixels.data(), img.pixels.size());
        *width = img.width;
        *height = img.height;
    });
}

void ek_image_free(uint8_t * rgb) { std::free(rgb); }

ek_status ek_resize_bicubic(const uint8_t * rgb, int32_t width, int32_t height, uint8_t * out, int32_t out_width,
                            int32_t out_height) {
    return guarded([&] {
        if (!rgb || !out || width < 1 || height < 1 || out_width < 1 || out_height < 1)
            throw ek::Error(EK_ERR_ARGUMENT, "ek_resize_bicubic needs buffers and positive sizes");
        std::vector<uint8_t> px = ek::resize_bicubic(rgb, width, height, out_width, out_height);
        std::memcpy(out, px.data(), px.size());
    });
}

ek_status ek_prompt(const ek_session * session, const char * question, int32_t think, int32_t with_image, char * out,
                    size_t out_size, size_t * needed) {
    return guarded([&] {
        if (!session || !question) throw ek::Error(EK_ERR_ARGUMENT, "NULL argument to ek_prompt");
        std::string text = build_prompt(session->bundle, question, think != 0, with_image);
        if (needed) *needed = text.size() + 1;
        if (out && out_size > text.size()) std::memcpy(out, text.c_str(), text.size() + 1);
        else if (out && out_size) throw ek::Error(EK_ERR_ARGUMENT, "ek_prompt: out has " + std::to_string(out_size) +
                                                  " bytes, the prompt needs " + std::to_string(text.size() + 1));
    });
}

ek_status ek_input_size(const ek_session * session, int32_t * width, int32_t * height) {
    return guarded([&] {
        if (!session || !width || !height) throw ek::Error(EK_ERR_ARGUMENT, "NULL argument to ek_input_size");
        *width = session->bundle.width;
        *height = session->bundle.height;
    });
}

void ek_close(ek_session * s) {
    if (!s) return;
    if (s->mtmd) mtmd_free(s->mtmd);
    if (s->step.token) llama_batch_free(s->step);
    if (s->ctx) llama_free(s->ctx);
    if (s->model) llama_model_free(s->model);
    delete s;
}

const char * ek_last_error(void) { return g_last_error.c_str(); }

const char * ek_status_name(ek_status status) {
    switch (status) {
        case EK_OK: return "ok";
        case EK_ERR_ARGUMENT: return "bad argument";
        case EK_ERR_IO: return "i/o error";
        case EK_ERR_MANIFEST: return "bad manifest";
        case EK_ERR_INTEGRITY: return "integrity check failed";
        case EK_ERR_UNSUPPORTED: return "unsupported bundle";
        case EK_ERR_RUNTIME: return "runtime error";
        case EK_ERR_CANCELLED: return "cancelled";
        case EK_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

}  // extern "C"
