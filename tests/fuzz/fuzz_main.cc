// Corpus replay for fuzz targets built without libFuzzer: every file named
// on the command line (or inside a directory named there) is fed to
// LLVMFuzzerTestOneInput once, then, with --mutate N, N seeded mutations of
// each (bit flips, byte overwrites, truncation, splices of another input):
// a small, deterministic fuzz campaign every CI run can afford.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
std::vector<char> make_seed(int variant) __attribute__((weak));
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

int main(int argc, char** argv) {
    namespace fsys = std::filesystem;
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    if (argc == 3 && std::string(argv[1]) == "--write-seeds" && make_seed) {
        for (int v = 0; v < 3; ++v) {
            auto s = make_seed(v);
            std::ofstream(fsys::path(argv[2]) / ("seed-" + std::to_string(v)), std::ios::binary)
                .write(s.data(), std::streamsize(s.size()));
        }
        return 0;
    }
    std::vector<fsys::path> files;
    unsigned mutations = 0;
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--mutate" && i + 1 < argc) {
            mutations = unsigned(std::stoul(argv[++i]));
            continue;
        }
        fsys::path p(argv[i]);
        if (fsys::is_directory(p)) {
            for (auto& e : fsys::directory_iterator(p))
                if (e.is_regular_file())
                    files.push_back(e.path());
        } else {
            files.push_back(p);
        }
    }
    if (files.empty()) {
        std::fprintf(stderr, "no corpus files\n");
        return 1;
    }
    std::vector<std::vector<char>> inputs;
    for (auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        inputs.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        auto& d = inputs.back();
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(d.data()), d.size());
    }
    std::mt19937_64 rng(12345);
    for (unsigned m = 0; m < mutations; ++m) {
        std::vector<char> d = inputs[m % inputs.size()];
        if (d.empty())
            d.resize(1);
        switch (rng() % 4) {
        case 0:
            for (int k = 0, n = int(1 + rng() % 8); k < n; ++k)
                d[rng() % d.size()] ^= char(1u << (rng() % 8));
            break;
        case 1:
            for (int k = 0, n = int(1 + rng() % 32); k < n; ++k)
                d[rng() % d.size()] = char(rng());
            break;
        case 2:
            d.resize(rng() % d.size());
            break;
        default: {
            const auto& o = inputs[rng() % inputs.size()];
            if (!o.empty()) {
                size_t at = rng() % d.size(), from = rng() % o.size();
                size_t n = std::min<size_t>({size_t(rng() % 8192), d.size() - at, o.size() - from});
                std::copy(o.begin() + long(from), o.begin() + long(from + n), d.begin() + long(at));
            }
        }
        }
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(d.data()), d.size());
    }
    std::printf("replayed %zu inputs and %u mutations\n", files.size(), mutations);
    return 0;
}
