// json_canonical FILE: the host's reading of a JSON file, for the tests that hold it to edgekit's Python reader:
// prints the RFC 8785 canonical form (exit 0), or "refused: <why>" (exit 3). Compiled from the library's own source.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "json.h"

int main(int argc, char ** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: json_canonical FILE\n");
        return 2;
    }
    std::ifstream in(argv[1], std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    try {
        std::string out = ek::canonical_json(ek::parse_json(text.str()));
        std::fwrite(out.data(), 1, out.size(), stdout);
        return 0;
    } catch (const std::exception & e) {
        std::printf("refused: %s\n", e.what());
        return 3;
    }
}
