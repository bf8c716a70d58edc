#include "json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <system_error>

namespace ek {
namespace {

constexpr int64_t kMaxSafe = int64_t(1) << 53;  // beyond it an integer has no exact IEEE double

class Parser {
public:
    explicit Parser(const std::string & s) : s_(s) {}

    Json document() {
        Json v = value(0);
        space();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string & what) const {
        throw std::runtime_error(what + " at byte " + std::to_string(i_));
    }
    void space() { while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_; }
    bool eat(char c) { space(); if (i_ < s_.size() && s_[i_] == c) { ++i_; return true; } return false; }
    void expect(char c) { if (!eat(c)) fail(std::string("expected '") + c + "'"); }
    bool word(const char * w) {
        size_t n = std::char_traits<char>::length(w);
        if (s_.compare(i_, n, w) == 0) { i_ += n; return true; }
        return false;
    }
    bool digit() const { return i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; }

    Json value(int depth) {
        space();
        if (i_ >= s_.size()) fail("unexpected end");
        Json v;
        char c = s_[i_];
        if (c == '{' || c == '[') {
            if (depth >= kMaxJsonDepth) fail("JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
            ++i_;
            if (c == '{') {
                v.type = Json::Object;
                if (eat('}')) return v;
                do {
                    space();
                    size_t at = i_;
                    std::string key = string_body();
                    expect(':');
                    Json member = value(depth + 1);
                    if (!v.members.emplace(std::move(key), std::move(member)).second) {
                        i_ = at;
                        fail("duplicate key in one JSON object");
                    }
                } while (eat(','));
                expect('}');
            } else {
                v.type = Json::Array;
                if (eat(']')) return v;
                do v.items.push_back(value(depth + 1)); while (eat(','));
                expect(']');
            }
        } else if (c == '"') {
            v.type = Json::String;
            v.text = string_body();
        } else if (word("true")) { v.type = Json::Bool; v.boolean = true; }
        else if (word("false")) { v.type = Json::Bool; }
        else if (word("null")) { v.type = Json::Null; }
        else {
            number(v);
        }
        return v;
    }

    // RFC 8259: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
    void number(Json & v) {
        size_t start = i_;
        if (s_[i_] == '-') ++i_;
        if (!digit()) fail("unexpected character");
        if (s_[i_] == '0') ++i_;
        else while (digit()) ++i_;
        bool integral = true;
        if (i_ < s_.size() && s_[i_] == '.') {
            ++i_;
            integral = false;
            if (!digit()) fail("a digit must follow the decimal point");
            while (digit()) ++i_;
        }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            ++i_;
            integral = false;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            if (!digit()) fail("a digit must follow the exponent");
            while (digit()) ++i_;
        }
        v.type = Json::Number;
        v.text = s_.substr(start, i_ - start);
        v.integral = integral;
        const char * first = v.text.data();
        const char * last = first + v.text.size();
        if (integral) {  // exact, as Python reads an integer; beyond 2^53 it has no canonical form (checked there)
            int64_t n = 0;
            auto r = std::from_chars(first, last, n);
            if (r.ec != std::errc() || r.ptr != last) fail("integer out of range");
            v.exact = n;
            v.number = double(n);
            return;
        }
        auto r = std::from_chars(first, last, v.number);
        if (r.ec == std::errc::result_out_of_range) {
            if (underflows(v.text)) v.number = v.text[0] == '-' ? -0.0 : 0.0;  // as Python's float(): rounds to 0
            else fail("number too large for a double");
        } else if (r.ec != std::errc() || r.ptr != last) {
            fail("bad number");
        }
    }

    // True when a number too far from 1 for a double is tiny (its decimal magnitude is negative), not huge.
    static bool underflows(const std::string & t) {
        size_t e = t.find_first_of("eE");
        std::string mant = t.substr(0, e);
        long exp = e == std::string::npos ? 0 : std::strtol(t.c_str() + e + 1, nullptr, 10);
        size_t point = mant.find('.');
        size_t first_nonzero = mant.find_first_of("123456789");
        if (first_nonzero == std::string::npos) return true;  // zero
        long magnitude = point == std::string::npos || first_nonzero < point
                             ? long((point == std::string::npos ? mant.size() : point) - first_nonzero)
                             : -long(first_nonzero - point - 1);
        return magnitude + exp < 0;
    }

    unsigned hex4() {
        if (i_ + 4 > s_.size()) fail("short \\u escape");
        unsigned u = 0;
        for (int k = 0; k < 4; ++k) {
            char h = s_[i_++];
            u = u * 16 + (h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                          : h >= 'A' && h <= 'F' ? h - 'A' + 10 : (fail("bad \\u escape"), 0));
        }
        return u;
    }

    static void utf8(std::string & out, unsigned cp) {
        if (cp < 0x80) out += char(cp);
        else if (cp < 0x800) { out += char(0xC0 | cp >> 6); out += char(0x80 | (cp & 63)); }
        else if (cp < 0x10000) { out += char(0xE0 | cp >> 12); out += char(0x80 | (cp >> 6 & 63)); out += char(0x80 | (cp & 63)); }
        else { out += char(0xF0 | cp >> 18); out += char(0x80 | (cp >> 12 & 63)); out += char(0x80 | (cp >> 6 & 63)); out += char(0x80 | (cp & 63)); }
    }

    // One UTF-8 character starting at i_ (already known not to be ASCII), copied to out; strict as Python's decoder:
    // no overlong forms, no encoded surrogates, nothing above U+10FFFF.
    void utf8_char(std::string & out) {
        unsigned char c = s_[i_];
        int n = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || i_ + n >= s_.size()) fail("not valid UTF-8");
        unsigned cp = c & (n == 1 ? 0x1F : n == 2 ? 0x0F : 0x07);
        for (int k = 1; k <= n; ++k) {
            unsigned char cc = s_[i_ + k];
            if ((cc & 0xC0) != 0x80) fail("not valid UTF-8");
            cp = cp << 6 | (cc & 0x3F);
        }
        static const unsigned min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) fail("not valid UTF-8");
        out.append(s_, i_, n + 1);
        i_ += n + 1;
    }

    std::string string_body() {
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
        ++i_;
        std::string out;
        while (true) {
            if (i_ >= s_.size()) fail("unterminated string");
            unsigned char c = s_[i_];
            if (c == '"') { ++i_; return out; }
            if (c < 0x20) fail("control character inside a string");
            if (c >= 0x80) { utf8_char(out); continue; }
            ++i_;
            if (c != '\\') { out += char(c); continue; }
            if (i_ >= s_.size()) fail("unterminated escape");
            char e = s_[i_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xDC00 && cp < 0xE000) fail("lone UTF-16 surrogate escape");
                    if (cp >= 0xD800 && cp < 0xDC00) {  // must be a pair
                        if (s_.compare(i_, 2, "\\u") != 0) fail("lone UTF-16 surrogate escape");
                        i_ += 2;
                        unsigned lo = hex4();
                        if (lo < 0xDC00 || lo >= 0xE000) fail("lone UTF-16 surrogate escape");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    utf8(out, cp);
                    break;
                }
                default: fail("bad escape");
            }
        }
    }

    const std::string & s_;
    size_t i_ = 0;
};

void write_string(std::string & out, const std::string & s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += char(c);  // UTF-8 as is
                }
        }
    }
    out += '"';
}

// ECMAScript's Number.prototype.toString of a double (RFC 8785 section 3.2.2.3), from the shortest round-trip
// digits that std::to_chars gives.
std::string es_number(double x) {
    if (!std::isfinite(x)) throw std::runtime_error("a number is not finite");
    if (x == 0) return "0";
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, std::fabs(x), std::chars_format::scientific);
    std::string sci(buf, r.ptr);  // d[.ddd]e[+-]XX
    size_t e = sci.find('e');
    std::string digits = sci.substr(0, e);
    digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
    while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
    long n = std::strtol(sci.c_str() + e + 1, nullptr, 10) + 1;  // value = 0.digits x 10^n
    long k = long(digits.size());
    std::string body;
    if (k <= n && n <= 21) {
        body = digits + std::string(size_t(n - k), '0');
    } else if (0 < n && n <= 21) {
        body = digits.substr(0, size_t(n)) + "." + digits.substr(size_t(n));
    } else if (-6 < n && n <= 0) {
        body = "0." + std::string(size_t(-n), '0') + digits;
    } else {
        long ex = n - 1;
        body = digits.substr(0, 1) + (k > 1 ? "." + digits.substr(1) : "") + "e" + (ex >= 0 ? "+" : "-") +
               std::to_string(ex >= 0 ? ex : -ex);
    }
    return (x < 0 ? "-" : "") + body;
}

std::u16string utf16(const std::string & s) {
    std::u16string out;
    for (size_t i = 0; i < s.size();) {
        unsigned char c = s[i];
        int n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : 3;  // validated by the parser
        unsigned cp = n == 0 ? c : c & (n == 1 ? 0x1F : n == 2 ? 0x0F : 0x07);
        for (int k = 1; k <= n; ++k) cp = cp << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3F);
        if (cp >= 0x10000) {
            cp -= 0x10000;
            out += char16_t(0xD800 + (cp >> 10));
            out += char16_t(0xDC00 + (cp & 0x3FF));
        } else {
            out += char16_t(cp);
        }
        i += n + 1;
    }
    return out;
}

void write(std::string & out, const Json & v) {
    switch (v.type) {
        case Json::Null: out += "null"; break;
        case Json::Bool: out += v.boolean ? "true" : "false"; break;
        case Json::Number:
            if (v.integral && (v.exact > kMaxSafe || v.exact < -kMaxSafe))
                throw std::runtime_error("integer " + v.text + " is beyond 2^53: it has no exact canonical form");
            out += es_number(v.number);
            break;
        case Json::String: write_string(out, v.text); break;
        case Json::Array:
            out += '[';
            for (size_t k = 0; k < v.items.size(); ++k) { if (k) out += ','; write(out, v.items[k]); }
            out += ']';
            break;
        case Json::Object: {
            std::vector<std::pair<std::u16string, const std::pair<const std::string, Json> *>> order;
            for (const auto & kv : v.members) order.emplace_back(utf16(kv.first), &kv);
            std::sort(order.begin(), order.end(), [](const auto & a, const auto & b) { return a.first < b.first; });
            out += '{';
            for (size_t k = 0; k < order.size(); ++k) {
                if (k) out += ',';
                write_string(out, order[k].second->first);
                out += ':';
                write(out, order[k].second->second);
            }
            out += '}';
        }
    }
}

}  // namespace

const Json & Json::at(const std::string & key) const {
    auto it = type == Object ? members.find(key) : members.end();
    if (it == members.end()) throw std::runtime_error("no '" + key + "'");
    return it->second;
}

const Json & Json::at(size_t index) const {
    if (type != Array || index >= items.size()) throw std::runtime_error("no item " + std::to_string(index));
    return items[index];
}

std::string Json::str() const {
    if (type != String) throw std::runtime_error("expected a string");
    return text;
}

int64_t Json::integer() const {
    if (type != Number || !integral || exact > kMaxSafe || exact < -kMaxSafe) throw std::runtime_error("expected a whole number");
    return exact;
}

Json parse_json(const std::string & text) { return Parser(text).document(); }

std::string canonical_json(const Json & value) {
    std::string out;
    write(out, value);
    return out;
}

}  // namespace ek
