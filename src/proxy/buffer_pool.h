// BufferPool: fixed-size I/O buffers recycled per worker, so an idle connection holds no buffer and
// a busy one never allocates on the hot path. Not thread-safe: one pool per worker thread.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <vector>

namespace bluegreen::proxy {

struct Buffer {
  static constexpr size_t kSize = 16 * 1024;
  Buffer* next = nullptr;  // free-list link
  size_t start = 0;        // first unread byte
  size_t end = 0;          // one past the last byte
  char data[kSize];

  size_t size() const { return end - start; }
  bool empty() const { return start == end; }
  char* begin_ptr() { return data + start; }
  size_t space() const { return kSize - end; }
  // Moves the unread bytes to the front to make room at the end.
  void Compact();
  // Before a read into space(): an empty buffer starts from the front again (left at the end, one
  // that was filled exactly would offer no room, and a recv() of 0 bytes returns 0, which reads as
  // EOF); a full one moves its unread bytes to the front.
  void MakeRoom() {
    if (empty()) {
      start = end = 0;
    } else if (space() == 0) {
      Compact();
    }
  }
};

class BufferPool {
 public:
  explicit BufferPool(size_t max_free = 64) : max_free_(max_free) {}
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  Buffer* Get();
  void Put(Buffer* b);  // nullptr is fine
  size_t free_count() const { return free_count_; }

 private:
  Buffer* free_ = nullptr;
  size_t free_count_ = 0;
  size_t max_free_;
};

}  // namespace bluegreen::proxy
