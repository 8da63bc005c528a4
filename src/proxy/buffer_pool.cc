#include "proxy/buffer_pool.h"

#include <cstring>
#include <new>

namespace bluegreen::proxy {

void Buffer::Compact() {
  if (start == 0) return;
  if (start != end) std::memmove(data, data + start, end - start);
  end -= start;
  start = 0;
}

BufferPool::~BufferPool() {
  while (free_ != nullptr) {
    Buffer* b = free_;
    free_ = b->next;
    delete b;
  }
}

Buffer* BufferPool::Get() {
  Buffer* b = free_;
  if (b != nullptr) {
    free_ = b->next;
    --free_count_;
  } else {
    b = new Buffer;  // NOLINT: owned by the pool's users, returned through Put
  }
  b->next = nullptr;
  b->start = b->end = 0;
  return b;
}

void BufferPool::Put(Buffer* b) {
  if (b == nullptr) return;
  if (free_count_ >= max_free_) {
    delete b;
    return;
  }
  b->next = free_;
  free_ = b;
  ++free_count_;
}

}  // namespace bluegreen::proxy
