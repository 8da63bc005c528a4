#include "common/net.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>

namespace bluegreen {
namespace {

using std::chrono::milliseconds;

sockaddr_storage V4(const char* text) {
  sockaddr_storage ss{};
  auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
  sin->sin_family = AF_INET;
  EXPECT_EQ(inet_pton(AF_INET, text, &sin->sin_addr), 1) << text;
  return ss;
}

sockaddr_storage V6(const char* text) {
  sockaddr_storage ss{};
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
  sin6->sin6_family = AF_INET6;
  EXPECT_EQ(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1) << text;
  return ss;
}

const sockaddr* Sa(const sockaddr_storage& ss) { return reinterpret_cast<const sockaddr*>(&ss); }

// ---------------------------------------------------------------------------------------------
// Endpoint

TEST(ParseEndpointTest, Ipv4) {
  Result<Endpoint> ep = ParseEndpoint("127.0.0.1:9001");
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  EXPECT_EQ(ep->family(), AF_INET);
  EXPECT_EQ(ep->port(), 9001);
  EXPECT_EQ(ep->len, sizeof(sockaddr_in));
  EXPECT_EQ(ep->ToString(), "127.0.0.1:9001");
}

TEST(ParseEndpointTest, Ipv6InBrackets) {
  Result<Endpoint> ep = ParseEndpoint("[::1]:9001");
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  EXPECT_EQ(ep->family(), AF_INET6);
  EXPECT_EQ(ep->port(), 9001);
  EXPECT_EQ(ep->len, sizeof(sockaddr_in6));
  EXPECT_EQ(ep->ToString(), "[::1]:9001");
}

TEST(ParseEndpointTest, Ipv6IsPrintedInCanonicalForm) {
  Result<Endpoint> ep = ParseEndpoint("[2001:DB8:0:0:0:0:0:1]:80");
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  EXPECT_EQ(ep->ToString(), "[2001:db8::1]:80");
}

TEST(ParseEndpointTest, LocalhostIsLoopbackV4) {
  Result<Endpoint> ep = ParseEndpoint("localhost:9001");
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  EXPECT_EQ(ep->ToString(), "127.0.0.1:9001");
  EXPECT_EQ(*ep, *ParseEndpoint("127.0.0.1:9001"));
}

TEST(ParseEndpointTest, PortZeroAndMaximumAreAccepted) {
  Result<Endpoint> zero = ParseEndpoint("127.0.0.1:0");
  ASSERT_TRUE(zero.ok()) << zero.status().ToString();
  EXPECT_EQ(zero->port(), 0);
  Result<Endpoint> max = ParseEndpoint("0.0.0.0:65535");
  ASSERT_TRUE(max.ok()) << max.status().ToString();
  EXPECT_EQ(max->port(), 65535);
}

TEST(ParseEndpointTest, RejectsMalformedInput) {
  for (const char* text :
       {"", "127.0.0.1", "127.0.0.1:", ":9001", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+80",
        "127.0.0.1:80x", "127.0.0.1: 80", "::1:9001", "[::1]9001", "[::1:9001", "[127.0.0.1]:80",
        "example.com:80", "256.0.0.1:80", "1.2.3:80", "[fe80::1%eth0]:80",
        "127.0.0.1:99999999999999999999"}) {
    Result<Endpoint> ep = ParseEndpoint(text);
    ASSERT_FALSE(ep.ok()) << text;
    EXPECT_EQ(ep.status().code(), StatusCode::kInvalidArgument) << text;
    EXPECT_NE(ep.status().message().find(text), std::string::npos) << ep.status().message();
  }
}

TEST(ParseEndpointTest, ErrorSaysWhatIsWrong) {
  EXPECT_EQ(ParseEndpoint("127.0.0.1:70000").status().message(),
            "invalid endpoint \"127.0.0.1:70000\": port must be a number between 0 and 65535");
  EXPECT_EQ(ParseEndpoint("::1:80").status().message(),
            "invalid endpoint \"::1:80\": IPv6 addresses must be in brackets, as in [::1]:9001");
}

TEST(EndpointTest, Equality) {
  EXPECT_EQ(*ParseEndpoint("10.0.0.1:80"), *ParseEndpoint("10.0.0.1:80"));
  EXPECT_FALSE(*ParseEndpoint("10.0.0.1:80") == *ParseEndpoint("10.0.0.1:81"));
  EXPECT_FALSE(*ParseEndpoint("10.0.0.1:80") == *ParseEndpoint("10.0.0.2:80"));
  EXPECT_FALSE(*ParseEndpoint("[::1]:80") == *ParseEndpoint("127.0.0.1:80"));
  EXPECT_EQ(*ParseEndpoint("[::1]:80"), *ParseEndpoint("[0:0::1]:80"));
  EXPECT_EQ(Endpoint{}, Endpoint{});
  EXPECT_EQ(Endpoint{}.port(), 0);
  EXPECT_EQ(Endpoint{}.ToString(), "");
}

TEST(EndpointTest, OrderingFollowsText) {
  EXPECT_TRUE(*ParseEndpoint("10.0.0.1:80") < *ParseEndpoint("10.0.0.2:80"));
  EXPECT_FALSE(*ParseEndpoint("10.0.0.2:80") < *ParseEndpoint("10.0.0.1:80"));
}

TEST(MakeEndpointTest, AddressAndPort) {
  Result<Endpoint> v4 = MakeEndpoint("0.0.0.0", 8000);
  ASSERT_TRUE(v4.ok()) << v4.status().ToString();
  EXPECT_EQ(v4->ToString(), "0.0.0.0:8000");
  Result<Endpoint> v6 = MakeEndpoint("::", 8000);
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ(v6->ToString(), "[::]:8000");
  EXPECT_EQ(MakeEndpoint("[::]", 80).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeEndpoint("localhost", 80).status().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Cidr

TEST(ParseCidrTest, Ipv4Block) {
  Result<Cidr> cidr = ParseCidr("127.0.0.0/8");
  ASSERT_TRUE(cidr.ok()) << cidr.status().ToString();
  EXPECT_EQ(cidr->family, AF_INET);
  EXPECT_EQ(cidr->prefix_len, 8);
  EXPECT_EQ(cidr->ToString(), "127.0.0.0/8");
  EXPECT_TRUE(cidr->Contains(Sa(V4("127.0.0.1"))));
  EXPECT_TRUE(cidr->Contains(Sa(V4("127.255.255.255"))));
  EXPECT_FALSE(cidr->Contains(Sa(V4("128.0.0.1"))));
  EXPECT_FALSE(cidr->Contains(Sa(V4("10.0.0.1"))));
}

TEST(ParseCidrTest, BareAddressIsSingleHost) {
  Result<Cidr> v4 = ParseCidr("10.0.0.1");
  ASSERT_TRUE(v4.ok()) << v4.status().ToString();
  EXPECT_EQ(v4->prefix_len, 32);
  EXPECT_EQ(v4->ToString(), "10.0.0.1/32");
  EXPECT_TRUE(v4->Contains(Sa(V4("10.0.0.1"))));
  EXPECT_FALSE(v4->Contains(Sa(V4("10.0.0.2"))));

  Result<Cidr> v6 = ParseCidr("::1");
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ(v6->prefix_len, 128);
  EXPECT_EQ(v6->ToString(), "::1/128");
}

TEST(ParseCidrTest, Ipv6Block) {
  Result<Cidr> cidr = ParseCidr("::1/128");
  ASSERT_TRUE(cidr.ok()) << cidr.status().ToString();
  EXPECT_EQ(cidr->family, AF_INET6);
  EXPECT_TRUE(cidr->Contains(Sa(V6("::1"))));
  EXPECT_FALSE(cidr->Contains(Sa(V6("::2"))));
  EXPECT_FALSE(cidr->Contains(Sa(V4("127.0.0.1"))));

  Result<Cidr> net = ParseCidr("2001:db8::/32");
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  EXPECT_TRUE(net->Contains(Sa(V6("2001:db8:1234::1"))));
  EXPECT_FALSE(net->Contains(Sa(V6("2001:db9::1"))));
}

TEST(ParseCidrTest, HostBitsAreMaskedOff) {
  Result<Cidr> cidr = ParseCidr("10.1.2.3/8");
  ASSERT_TRUE(cidr.ok()) << cidr.status().ToString();
  EXPECT_EQ(cidr->ToString(), "10.0.0.0/8");
  EXPECT_EQ(*cidr, *ParseCidr("10.0.0.0/8"));

  Result<Cidr> odd = ParseCidr("192.168.255.255/20");
  ASSERT_TRUE(odd.ok()) << odd.status().ToString();
  EXPECT_EQ(odd->ToString(), "192.168.240.0/20");
  EXPECT_TRUE(odd->Contains(Sa(V4("192.168.241.7"))));
  EXPECT_FALSE(odd->Contains(Sa(V4("192.168.239.7"))));
}

TEST(ParseCidrTest, ZeroPrefixMatchesEverythingOfTheFamily) {
  Result<Cidr> all4 = ParseCidr("0.0.0.0/0");
  ASSERT_TRUE(all4.ok()) << all4.status().ToString();
  EXPECT_TRUE(all4->Contains(Sa(V4("1.2.3.4"))));
  EXPECT_TRUE(all4->Contains(Sa(V6("::ffff:1.2.3.4"))));
  EXPECT_FALSE(all4->Contains(Sa(V6("2001:db8::1"))));

  Result<Cidr> all6 = ParseCidr("::/0");
  ASSERT_TRUE(all6.ok()) << all6.status().ToString();
  EXPECT_TRUE(all6->Contains(Sa(V6("2001:db8::1"))));
}

TEST(CidrTest, V4MappedPeersMatchV4Blocks) {
  Cidr cidr = *ParseCidr("127.0.0.0/8");
  EXPECT_TRUE(cidr.Contains(Sa(V6("::ffff:127.0.0.1"))));
  EXPECT_FALSE(cidr.Contains(Sa(V6("::ffff:10.0.0.1"))));
  EXPECT_FALSE(cidr.Contains(Sa(V6("::127.0.0.1"))));  // v4-compatible, not v4-mapped
}

TEST(CidrTest, V4PeersMatchV4MappedBlocks) {
  Cidr cidr = *ParseCidr("::ffff:10.0.0.0/104");
  EXPECT_TRUE(cidr.Contains(Sa(V4("10.1.2.3"))));
  EXPECT_FALSE(cidr.Contains(Sa(V4("11.1.2.3"))));
}

TEST(CidrTest, OtherFamiliesAndNullNeverMatch) {
  Cidr cidr = *ParseCidr("0.0.0.0/0");
  sockaddr_storage unix_addr{};
  unix_addr.ss_family = AF_UNIX;
  EXPECT_FALSE(cidr.Contains(Sa(unix_addr)));
  EXPECT_FALSE(cidr.Contains(nullptr));
}

TEST(CidrTest, Equality) {
  EXPECT_EQ(*ParseCidr("10.0.0.0/8"), *ParseCidr("10.0.0.0/8"));
  EXPECT_FALSE(*ParseCidr("10.0.0.0/8") == *ParseCidr("10.0.0.0/9"));
  EXPECT_FALSE(*ParseCidr("10.0.0.0/8") == *ParseCidr("11.0.0.0/8"));
  EXPECT_FALSE(*ParseCidr("0.0.0.0/0") == *ParseCidr("::/0"));
}

TEST(ParseCidrTest, RoundTripsThroughToString) {
  for (const char* text : {"127.0.0.0/8", "::1/128", "10.0.0.1/32", "2001:db8::/32", "0.0.0.0/0"}) {
    Result<Cidr> cidr = ParseCidr(text);
    ASSERT_TRUE(cidr.ok()) << text;
    EXPECT_EQ(cidr->ToString(), text);
    EXPECT_EQ(*ParseCidr(cidr->ToString()), *cidr);
  }
}

TEST(ParseCidrTest, RejectsMalformedInput) {
  for (const char* text : {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/-1",
                           "10.0.0.0/8/8", "10.0.0/8", "host/8", "10.0.0.0/ 8", "[::1]/128"}) {
    Result<Cidr> cidr = ParseCidr(text);
    ASSERT_FALSE(cidr.ok()) << text;
    EXPECT_EQ(cidr.status().code(), StatusCode::kInvalidArgument) << text;
  }
  EXPECT_EQ(ParseCidr("10.0.0.0/33").status().message(),
            "invalid CIDR \"10.0.0.0/33\": prefix length must be between 0 and 32");
}

// ---------------------------------------------------------------------------------------------
// Durations

TEST(ParseDurationTest, Units) {
  EXPECT_EQ(*ParseDuration("250ms"), milliseconds(250));
  EXPECT_EQ(*ParseDuration("10s"), milliseconds(10'000));
  EXPECT_EQ(*ParseDuration("5m"), milliseconds(300'000));
  EXPECT_EQ(*ParseDuration("24h"), milliseconds(86'400'000));
  EXPECT_EQ(*ParseDuration("0s"), milliseconds(0));
  EXPECT_EQ(*ParseDuration("0"), milliseconds(0));
}

TEST(ParseDurationTest, Compound) {
  EXPECT_EQ(*ParseDuration("1h30m"), milliseconds(5'400'000));
  EXPECT_EQ(*ParseDuration("1m30s"), milliseconds(90'000));
  EXPECT_EQ(*ParseDuration("1s500ms"), milliseconds(1'500));
  EXPECT_EQ(*ParseDuration("2h3m4s5ms"), milliseconds(7'384'005));
}

TEST(ParseDurationTest, BareNumberIsSeconds) {
  EXPECT_EQ(*ParseDuration("10"), milliseconds(10'000));
  EXPECT_EQ(*ParseDuration("0.5"), milliseconds(500));
}

TEST(ParseDurationTest, ExactFractions) {
  EXPECT_EQ(*ParseDuration("1.5s"), milliseconds(1'500));
  EXPECT_EQ(*ParseDuration("0.25h"), milliseconds(900'000));
  EXPECT_EQ(*ParseDuration("1.000000000000000s"), milliseconds(1'000));
  EXPECT_EQ(ParseDuration("1.0001s").status().message(),
            "invalid duration \"1.0001s\": finer than a millisecond");
  EXPECT_EQ(ParseDuration("1.5ms").status().code(), StatusCode::kInvalidArgument);
}

TEST(ParseDurationTest, Errors) {
  EXPECT_EQ(ParseDuration("").status().message(), "invalid duration \"\": empty");
  EXPECT_EQ(ParseDuration("-5s").status().message(),
            "invalid duration \"-5s\": must not be negative");
  EXPECT_EQ(ParseDuration("5d").status().message(),
            "invalid duration \"5d\": unknown unit \"d\" (expected ms, s, m or h)");
  EXPECT_EQ(ParseDuration("1h30").status().message(),
            "invalid duration \"1h30\": missing unit (ms, s, m or h)");
  EXPECT_EQ(ParseDuration("99999999999999999999s").status().message(),
            "invalid duration \"99999999999999999999s\": too large");
  for (const char* text :
       {"s", "ms", "+5s", " 5s", "5 s", "5s ", "1.s", ".", "5S", "1e3", "5us", "10000000000000h",
        "9223372036854775807s", "9223372036854776s", "5000000000000000h5000000000000000h"}) {
    Result<milliseconds> d = ParseDuration(text);
    EXPECT_FALSE(d.ok()) << text;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(ParseDurationTest, LargestValue) {
  EXPECT_EQ(*ParseDuration("9223372036854775807ms"), milliseconds::max());
  EXPECT_FALSE(ParseDuration("9223372036854775808ms").ok());
  EXPECT_FALSE(ParseDuration("9223372036854775807ms1ms").ok());
}

TEST(FormatDurationTest, Shortest) {
  EXPECT_EQ(FormatDuration(milliseconds(0)), "0s");
  EXPECT_EQ(FormatDuration(milliseconds(250)), "250ms");
  EXPECT_EQ(FormatDuration(milliseconds(10'000)), "10s");
  EXPECT_EQ(FormatDuration(milliseconds(90'000)), "90s");
  EXPECT_EQ(FormatDuration(milliseconds(300'000)), "5m");
  EXPECT_EQ(FormatDuration(milliseconds(3'600'000)), "1h");
  EXPECT_EQ(FormatDuration(milliseconds(86'400'000)), "24h");
  EXPECT_EQ(FormatDuration(milliseconds(5'400'000)), "90m");
  EXPECT_EQ(FormatDuration(milliseconds(1'500)), "1500ms");
  EXPECT_EQ(FormatDuration(milliseconds(3'723'000)), "3723s");
  EXPECT_EQ(FormatDuration(milliseconds(3'600'001)), "1h1ms");
}

TEST(FormatDurationTest, RoundTrips) {
  for (int64_t ms :
       {int64_t{0}, int64_t{1}, int64_t{999}, int64_t{1'000}, int64_t{1'001}, int64_t{59'999},
        int64_t{60'000}, int64_t{61'000}, int64_t{3'599'999}, int64_t{3'600'001},
        int64_t{86'399'999}, int64_t{123'456'789'012}, std::numeric_limits<int64_t>::max()}) {
    std::string text = FormatDuration(milliseconds(ms));
    Result<milliseconds> back = ParseDuration(text);
    ASSERT_TRUE(back.ok()) << ms << " -> " << text << ": " << back.status().ToString();
    EXPECT_EQ(back->count(), ms) << text;
  }
}

TEST(FormatDurationTest, NegativeIsShownButNotParsed) {
  EXPECT_EQ(FormatDuration(milliseconds(-5'000)), "-5s");
  EXPECT_FALSE(ParseDuration(FormatDuration(milliseconds(-5'000))).ok());
  EXPECT_FALSE(FormatDuration(milliseconds::min()).empty());
}

}  // namespace
}  // namespace bluegreen
