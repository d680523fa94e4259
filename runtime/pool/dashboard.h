// The coordinator's status page: one self-contained HTML document (inline CSS
// and JS, no external assets). The script polls /api/status and /api/ledger
// (public by default; with `serve --private` it asks for a token once and
// sends it in the Authorization header, never in a URL); it renders
// contributors (hardware, state, claimed beside measured figures), jobs and
// rounds, an inline-SVG loss curve and the ledger with its chain head. All
// contributor-supplied text goes through textContent, never innerHTML.
#pragma once

#include <string>

namespace myelin::pool {
const std::string& dashboard_html();
}
