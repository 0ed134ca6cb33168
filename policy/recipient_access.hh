// The recipient access table: what the gateway says to a RCPT TO mailbox
// before (and instead of) asking the internal server. Entries match, from
// the most precise to the least:
//   "user@example.test"   that mailbox
//   "user@"               that local part at any domain
//   "example.test"        every mailbox of that domain
//   "*.example.test"      every mailbox of its subdomains (longest first)
// Local parts compare as written, domains without case and one trailing dot.
// An entry accepts (the mailbox is known: no call-ahead) or rejects with
// its own reply; either may bypass the throttles of the client's mail flow
// policy (recipients per message and per hour).
//
// The table refines relay control (relay.hh), it never widens it: an
// accept entry for a domain that is not ours grants no relaying.
// Immutable once built; shared by every core.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/base/result.hh"

namespace rw::policy {

struct recipient_entry {
    std::string match;  // as configured
    bool reject = false;
    int code = 550;
    std::string enhanced = "5.1.1", text = "Recipient address rejected";
    bool bypass_throttles = false;
};

class recipient_table {
public:
    // The error names an entry that cannot be used (a malformed match, a
    // duplicate).
    static result<recipient_table, std::string> build(std::vector<recipient_entry> entries);

    // The entry for local@domain, or null.
    const recipient_entry* find(std::string_view local, std::string_view domain) const;
    bool empty() const noexcept { return _entries.empty(); }

private:
    std::vector<recipient_entry> _entries;
    std::unordered_map<std::string, size_t> _address, _local, _domain, _below;
};

}  // namespace rw::policy
