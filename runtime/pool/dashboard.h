// The coordinator's status page: one self-contained HTML document (inline CSS
// and JS, no external assets). The script reads ?token= from its own URL and
// polls /api/status and /api/ledger; it renders contributors (hardware,
// state), jobs and rounds, an inline-SVG loss curve and the ledger. All
// contributor-supplied text goes through textContent, never innerHTML.
#pragma once

#include <string>

namespace myelin::pool {
const std::string& dashboard_html();
}
