# Reference values for tests/unit/test_analysis_judge.py, from R's own wilcox.test.
# Run: Rscript tests/unit/reference/wilcox.R   (Debian: apt-get install r-base-core)
# Each case prints R's report, then every number to 17 significant digits:
#   W, p-value, conf.int low, conf.int high, conf.level achieved, estimate.
# The tests quote both next to the vectors; nothing in coalmine computes these.

show <- function(name, x, y, ...) {
  cat("==", name, "\n")
  r <- tryCatch(wilcox.test(x, y, conf.int = TRUE, ...),
                error = function(e) { cat("error:", conditionMessage(e), "\n"); NULL })
  if (is.null(r)) {
    r <- suppressWarnings(wilcox.test(x, y, ...))  # the test without its interval
    print(r)
    cat(sprintf("%.17g", c(r$statistic, r$p.value)), "\n")
    return(invisible())
  }
  print(r)
  cat(sprintf("%.17g", c(r$statistic, r$p.value, r$conf.int,
                         attr(r$conf.int, "conf.level"), r$estimate)), "\n")
}

# R's help page example (Hollander & Wolfe 1973, p. 69): permeability constants.
x <- c(0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46)
y <- c(1.15, 0.88, 0.90, 0.74, 1.21)
show("hollander-greater", x, y, alternative = "greater")
show("hollander-two-sided", x, y)
show("hollander-less", x, y, alternative = "less")

# Tiny samples: three and three (95% is not achievable), four and five.
show("three-three", c(1.1, 2.3, 3.5), c(0.2, 0.9, 1.4))
show("three-three-greater", c(1.1, 2.3, 3.5), c(0.2, 0.9, 1.4), alternative = "greater")
show("four-five-less", c(0.31, 0.12, 0.25, 0.07), c(0.44, 0.29, 0.51, 0.38, 0.6),
     alternative = "less")

# Ties in a small sample: R uses the normal approximation with tie and continuity correction.
ties_x <- c(1, 2, 2, 3, 3, 3, 4)
ties_y <- c(2, 3, 4, 4, 5, 5)
show("ties-two-sided", ties_x, ties_y)
show("ties-greater", ties_x, ties_y, alternative = "greater")
show("ties-less", ties_x, ties_y, alternative = "less")

# Mostly 0, small: per-interval error rates of a canary and a baseline.
zx <- c(0, 0, 0, 0.02, 0, 0.01, 0, 0, 0.03, 0)
zy <- c(0, 0, 0, 0, 0, 0.01, 0, 0, 0, 0)
show("zeros-small-greater", zx, zy, alternative = "greater")

# Mostly 0, large: the canary non-zero four times as often as the baseline.
canary <- c(rep(0, 160), rep(c(0.01, 0.02, 0.05, 0.1), 10))
baseline <- c(rep(0, 190), rep(c(0.01, 0.02, 0.05, 0.1, 0.02), 2))
show("zeros-large-greater", canary, baseline, alternative = "greater")
show("zeros-large-two-sided", canary, baseline)

# Large without ties: the normal approximation (R's exact limit is 50 per side).
lx <- sin(1:60) + 0.3
ly <- cos(1:70)
show("large-greater", lx, ly, alternative = "greater")
show("large-two-sided", lx, ly, conf.level = 0.98)

# All values equal: no interval in R.
show("all-equal", c(3, 3, 3, 3), c(3, 3, 3))
show("two-constants", rep(2, 5), rep(1, 5), alternative = "greater")
