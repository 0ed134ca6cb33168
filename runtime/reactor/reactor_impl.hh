// Template parts of reactor.hh (which includes this at its end; included
// first, this brings reactor.hh in).
#pragma once

#include <optional>
#include <stdexcept>

#include "runtime/reactor/reactor.hh"

namespace rw {

template <typename T>
T run_local(task<T> t, reactor::options o) {
    auto r = reactor::create(o);
    if (!r)
        throw std::runtime_error(r.error());
    std::unique_ptr<reactor> re = std::move(r.value());
    if constexpr (std::is_void_v<T>) {
        std::exception_ptr ex;
        auto wrap = [](task<void> inner, std::exception_ptr* e) -> task<void> {
            try {
                co_await std::move(inner);
            } catch (...) {
                *e = std::current_exception();
            }
        };
        re->run(wrap(std::move(t), &ex));
        re.reset();
        if (ex)
            std::rethrow_exception(ex);
    } else {
        std::optional<T> out;
        std::exception_ptr ex;
        auto wrap = [](task<T> inner, std::optional<T>* o, std::exception_ptr* e) -> task<void> {
            try {
                o->emplace(co_await std::move(inner));
            } catch (...) {
                *e = std::current_exception();
            }
        };
        re->run(wrap(std::move(t), &out, &ex));
        re.reset();
        if (ex)
            std::rethrow_exception(ex);
        return std::move(*out);
    }
}

}  // namespace rw
