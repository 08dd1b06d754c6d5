// page.h — the web page of `rar serve` (GET /): one self-contained HTML document, no external
// scripts, styles or fonts, so it works offline. It reads the classes from /v1/info, sends the
// form to POST /v1/generate?stream=1 and shows each image as its event arrives, with the time
// taken; every image links to its PNG; the form's state lives in the URL (shareable).
#pragma once
#include <string>

namespace rar::serve {

const std::string& page_html();

}  // namespace rar::serve
