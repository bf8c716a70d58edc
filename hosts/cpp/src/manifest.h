// edgekit.json for the host: schema, seal, safe paths and every artifact's size and sha256, checked before any
// model loads; then what the host needs from it (parts, input size, context, prompt frames).
#pragma once

#include <map>
#include <string>

namespace ek {

struct PromptFrame {
    std::string before;  // chat template text up to the question (the image placeholder included when there is one)
    std::string after;   // after the question (without the no-think suffix)
};

struct Bundle {
    std::string dir;
    std::string decoder_path;  // absolute
    std::string mmproj_path;
    int width = 0, height = 0;  // the input size images are resized to
    int context = 4096;
    int resample = 3;  // Pillow's filter id from the processor config (3 = bicubic)
    std::string image_placeholder;
    std::string no_think_suffix;
    bool suffix_turns_thinking_off = false;  // the template thinks not, for a question ending with the suffix
    std::map<std::string, PromptFrame> frames;  // "think/0", "think/1", "no_think/0", "no_think/1"
};

// Throws ek::Error naming the field or file at the first problem.
Bundle open_manifest(const std::string & dir, bool verify_artifacts);

}  // namespace ek
