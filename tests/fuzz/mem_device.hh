// An in-memory block device for fuzz targets: reads and writes a byte
// vector, flush does nothing. (The crash simulator has its own, richer one.)
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "fs/block_device.hh"

namespace rw::fuzz {

class mem_device final : public fs::block_device {
public:
    explicit mem_device(size_t bytes) : _img(bytes, 0) {}
    uint64_t size_bytes() const override { return _img.size(); }
    const std::string& name() const override { return _name; }
    task<int> read(void* buf, size_t len, uint64_t off) override {
        if (off + len > _img.size())
            co_return -EIO;
        std::memcpy(buf, _img.data() + off, len);
        co_return 0;
    }
    task<int> write(const void* buf, size_t len, uint64_t off) override {
        if (off + len > _img.size())
            co_return -EIO;
        std::memcpy(_img.data() + off, buf, len);
        co_return 0;
    }
    task<int> flush() override { co_return 0; }
    std::vector<char>& image() { return _img; }

private:
    std::vector<char> _img;
    std::string _name = "<memory>";
};

}  // namespace rw::fuzz
