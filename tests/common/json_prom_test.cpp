#include <gtest/gtest.h>

#include "common/json.h"
#include "common/prom.h"

namespace halb {
namespace {

TEST(JsonWriter, NestsAndEscapes) {
  JsonWriter j;
  j.beginObject();
  j.key("a").value(1);
  j.key("s").value("q\"\\\n\x01");
  j.key("list").beginArray().value(true).null().value(2.5).endArray();
  j.key("o").beginObject().endObject();
  j.key("r").raw("{\"x\":1}");
  j.endObject();
  EXPECT_EQ(j.str(), R"({"a":1,"s":"q\"\\\n\u0001","list":[true,null,2.5],"o":{},"r":{"x":1}})");
}

TEST(PromWriter, WritesFamiliesAndEscapedLabels) {
  PromWriter w;
  w.family("halb_x_total", "counter", "X.");
  w.sample("halb_x_total", {{"backend", "a\"b"}}, 3);
  w.sample("halb_x_total", {}, 0.25);
  EXPECT_EQ(w.text(),
            "# HELP halb_x_total X.\n# TYPE halb_x_total counter\n"
            "halb_x_total{backend=\"a\\\"b\"} 3\nhalb_x_total 0.25\n");
}

TEST(Histogram, BucketsAreCumulativeAndMergeable) {
  const double bounds[] = {0.001, 0.01, 0.1};
  Histogram a(bounds), b(bounds);
  a.observe(0.0005);
  a.observe(0.005);
  b.observe(0.05);
  b.observe(5);
  std::vector<uint64_t> counts;
  double sum = 0;
  a.addTo(counts, sum);
  b.addTo(counts, sum);
  EXPECT_EQ(counts, (std::vector<uint64_t>{1, 1, 1, 1}));
  EXPECT_NEAR(sum, 5.0555, 1e-4);
  PromWriter w;
  Histogram::write(w, "lat", {{"b", "x"}}, bounds, counts, sum);
  EXPECT_NE(w.text().find("lat_bucket{b=\"x\",le=\"0.01\"} 2\n"), std::string::npos);
  EXPECT_NE(w.text().find("lat_bucket{b=\"x\",le=\"+Inf\"} 4\n"), std::string::npos);
  EXPECT_NE(w.text().find("lat_count{b=\"x\"} 4\n"), std::string::npos);
  double p50 = Histogram::quantile(bounds, counts, 0.5);
  EXPECT_GT(p50, 0.001);
  EXPECT_LE(p50, 0.01 + 1e-12);
}

}  // namespace
}  // namespace halb
