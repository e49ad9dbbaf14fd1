"""What smpc computes on shares beyond CrypTen's own arithmetic: approximations of the
non-linear functions that hold on the ranges real models produce."""
