// edgekit.json for the host: schema, seal (RFC 8785, as edgekit/bundle/seal.py), safe paths, ranges, and every
// artifact opened once below the bundle's directory without following a link, hashed from that descriptor and kept
// open: llama.cpp loads the very file that was hashed (/proc/self/fd/N), whatever is renamed over its name later.
#pragma once

#include <map>
#include <string>

namespace ek {

struct PromptFrame {
    std::string before;  // chat template text up to the question (the image placeholder included when there is one)
    std::string after;   // after the question (without the no-think suffix)
};

class Bundle {
public:
    Bundle() = default;
    Bundle(const Bundle &) = delete;
    Bundle & operator=(const Bundle &) = delete;
    Bundle(Bundle && other) noexcept { *this = std::move(other); }
    Bundle & operator=(Bundle && other) noexcept;
    ~Bundle() { close(); }
    void close();

    std::string fd_path(const std::string & rel) const;  // "/proc/self/fd/N" of a verified artifact

    std::string dir;
    std::string decoder_rel, mmproj_rel;  // paths inside the bundle, for messages
    int width = 0, height = 0;  // the input size images are resized to
    int context = 4096;
    int max_position = 4096;  // the model's; a context asked for at open time stays within it
    int resample = 3;  // Pillow's filter id from the processor config (3 = bicubic)
    std::string image_placeholder;
    std::string no_think_suffix;
    bool suffix_turns_thinking_off = false;  // the template thinks not, for a question ending with the suffix
    bool images_in_a_row = false;  // several images: the one-image frame with the placeholder repeated
    std::map<std::string, PromptFrame> frames;  // "think/0", "think/1", "no_think/0", "no_think/1"
    std::map<std::string, int> fds;  // artifact (relative path) -> the open descriptor it was verified through
    int root_fd = -1;
};

// Throws ek::Error naming the field or file at the first problem.
Bundle open_manifest(const std::string & dir, bool verify_artifacts);

}  // namespace ek
