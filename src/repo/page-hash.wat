;; Page hashes of file maps (docs/backup-format.md §4): XXH64 with seed 0 of every 8 KB page of a buffer, as
;; xxHash's specification (doc/xxhash_spec.md, "XXH64 Algorithm Description") defines it, with the all-zero test of
;; each page in the same pass over memory. Compiled by `node scripts/build-page-hash-wasm.mjs` (wabt's wat2wasm)
;; into page-hash-wasm.ts; page-hash.ts loads it. Integers in memory are little-endian, as WebAssembly's.

(module
  (memory (export "memory") 17)
  (global $P1 i64 (i64.const 0x9E3779B185EBCA87))
  (global $P2 i64 (i64.const 0xC2B2AE3D27D4EB4F))
  (global $P3 i64 (i64.const 0x165667B19E3779F9))
  (global $P4 i64 (i64.const 0x85EBCA77C2B2AE63))
  (global $P5 i64 (i64.const 0x27D4EB2F165667C5))

  ;; round(acc, lane) = rotl(acc + lane * P2, 31) * P1
  (func $round (param $acc i64) (param $lane i64) (result i64)
    (i64.mul (i64.rotl (i64.add (local.get $acc) (i64.mul (local.get $lane) (global.get $P2))) (i64.const 31)) (global.get $P1)))

  ;; mergeRound(h, v) = (h ^ round(0, v)) * P1 + P4
  (func $merge (param $h i64) (param $v i64) (result i64)
    (i64.add (i64.mul (i64.xor (local.get $h) (call $round (i64.const 0) (local.get $v))) (global.get $P1)) (global.get $P4)))

  ;; XXH64 of the $len bytes at $p with $seed.
  (func $xxh64 (export "xxh64") (param $p i32) (param $len i32) (param $seed i64) (result i64)
    (local $end i32) (local $limit i32) (local $h i64) (local $v1 i64) (local $v2 i64) (local $v3 i64) (local $v4 i64)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (if (i32.ge_u (local.get $len) (i32.const 32))
      (then
        ;; Four lanes over stripes of 32 bytes.
        (local.set $limit (i32.sub (local.get $end) (i32.const 32)))
        (local.set $v1 (i64.add (i64.add (local.get $seed) (global.get $P1)) (global.get $P2)))
        (local.set $v2 (i64.add (local.get $seed) (global.get $P2)))
        (local.set $v3 (local.get $seed))
        (local.set $v4 (i64.sub (local.get $seed) (global.get $P1)))
        (loop $stripes
          (local.set $v1 (call $round (local.get $v1) (i64.load offset=0 (local.get $p))))
          (local.set $v2 (call $round (local.get $v2) (i64.load offset=8 (local.get $p))))
          (local.set $v3 (call $round (local.get $v3) (i64.load offset=16 (local.get $p))))
          (local.set $v4 (call $round (local.get $v4) (i64.load offset=24 (local.get $p))))
          (local.set $p (i32.add (local.get $p) (i32.const 32)))
          (br_if $stripes (i32.le_u (local.get $p) (local.get $limit))))
        (local.set $h (i64.add
          (i64.add (i64.rotl (local.get $v1) (i64.const 1)) (i64.rotl (local.get $v2) (i64.const 7)))
          (i64.add (i64.rotl (local.get $v3) (i64.const 12)) (i64.rotl (local.get $v4) (i64.const 18)))))
        (local.set $h (call $merge (local.get $h) (local.get $v1)))
        (local.set $h (call $merge (local.get $h) (local.get $v2)))
        (local.set $h (call $merge (local.get $h) (local.get $v3)))
        (local.set $h (call $merge (local.get $h) (local.get $v4))))
      (else (local.set $h (i64.add (local.get $seed) (global.get $P5)))))
    (local.set $h (i64.add (local.get $h) (i64.extend_i32_u (local.get $len))))
    ;; The rest: 8 bytes at a time, then 4, then single bytes.
    (block $done8
      (loop $eight
        (br_if $done8 (i32.gt_u (i32.add (local.get $p) (i32.const 8)) (local.get $end)))
        (local.set $h (i64.add
          (i64.mul (i64.rotl (i64.xor (local.get $h) (call $round (i64.const 0) (i64.load (local.get $p)))) (i64.const 27)) (global.get $P1))
          (global.get $P4)))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $eight)))
    (if (i32.le_u (i32.add (local.get $p) (i32.const 4)) (local.get $end))
      (then
        (local.set $h (i64.add
          (i64.mul (i64.rotl (i64.xor (local.get $h) (i64.mul (i64.load32_u (local.get $p)) (global.get $P1))) (i64.const 23)) (global.get $P2))
          (global.get $P3)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))))
    (block $done1
      (loop $one
        (br_if $done1 (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $h (i64.mul (i64.rotl (i64.xor (local.get $h) (i64.mul (i64.load8_u (local.get $p)) (global.get $P5))) (i64.const 11)) (global.get $P1)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $one)))
    ;; Avalanche.
    (local.set $h (i64.mul (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 33))) (global.get $P2)))
    (local.set $h (i64.mul (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 29))) (global.get $P3)))
    (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 32))))

  ;; 1 when the $len bytes at $p ($len a multiple of 16) are all zero, else 0.
  (func $allZero (param $p i32) (param $len i32) (result i32)
    (local $end i32) (local $acc i64)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $out
      (loop $words
        (br_if $out (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $acc (i64.or (local.get $acc) (i64.or (i64.load (local.get $p)) (i64.load offset=8 (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $words)))
    (i64.eqz (local.get $acc)))

  ;; The page hashes of the $len bytes at $src (pages of 8192 bytes; the last may be shorter) into $out, 8 bytes each:
  ;; 0 for an all-zero page of 8192 bytes, 1 for any other page whose XXH64 is 0, else its XXH64. Returns the number
  ;; of all-zero pages.
  (func (export "hashPages") (param $src i32) (param $len i32) (param $out i32) (result i32)
    (local $end i32) (local $n i32) (local $h i64) (local $zeros i32)
    (local.set $end (i32.add (local.get $src) (local.get $len)))
    (block $done
      (loop $pages
        (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
        (local.set $n (i32.sub (local.get $end) (local.get $src)))
        (if (i32.gt_u (local.get $n) (i32.const 8192)) (then (local.set $n (i32.const 8192))))
        (if (if (result i32) (i32.eq (local.get $n) (i32.const 8192))
              (then (call $allZero (local.get $src) (local.get $n)))
              (else (i32.const 0)))
          (then
            (local.set $h (i64.const 0))
            (local.set $zeros (i32.add (local.get $zeros) (i32.const 1))))
          (else
            (local.set $h (call $xxh64 (local.get $src) (local.get $n) (i64.const 0)))
            (if (i64.eqz (local.get $h)) (then (local.set $h (i64.const 1))))))
        (i64.store (local.get $out) (local.get $h))
        (local.set $out (i32.add (local.get $out) (i32.const 8)))
        (local.set $src (i32.add (local.get $src) (local.get $n)))
        (br $pages)))
    (local.get $zeros))
)
