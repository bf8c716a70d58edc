// A strict JSON reader for edgekit.json, and the RFC 8785 canonical form the seal is computed over
// (edgekit/json_files.py implements the same rules; both compute the same digest from the same bytes).
//
// Strict, as edgekit's Python reader: RFC 8259 grammar only, valid UTF-8, surrogate escapes only in pairs, no
// duplicate key in any object, nesting at most kMaxDepth deep (the parser never recurses past it, so no input can
// exhaust the stack). Each violation throws std::runtime_error naming it and the byte offset.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ek {

constexpr int kMaxJsonDepth = 64;

struct Json {
    enum Type { Null, Bool, Number, String, Array, Object } type = Null;
    bool boolean = false;
    double number = 0;                   // a Number's value as an IEEE double (what RFC 8785 canonicalises)
    bool integral = false;               // a Number written without fraction or exponent
    int64_t exact = 0;                   // an integral Number's exact value (beyond 2^53 a double would round it)
    std::string text;                    // a String's value (UTF-8), or a Number's text as written
    std::vector<Json> items;             // Array
    std::map<std::string, Json> members; // Object (unique keys)

    bool has(const std::string & key) const { return type == Object && members.count(key) > 0; }
    const Json & at(const std::string & key) const;  // throws std::runtime_error naming the key
    const Json & at(size_t index) const;
    std::string str() const;    // a String's value
    int64_t integer() const;    // a Number written without fraction or exponent, within +-2^53
};

// Throws std::runtime_error("... at byte N") on malformed input.
Json parse_json(const std::string & text);

// RFC 8785: keys sorted by UTF-16 code units, no whitespace, minimal string escapes, numbers as ECMAScript prints
// the double. Throws std::runtime_error for a number with no exact double (an integer beyond 2^53).
std::string canonical_json(const Json & value);

}  // namespace ek
