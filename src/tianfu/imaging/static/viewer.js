// Window/level on the rendered image: contrast narrows the window, brightness moves its centre (an 8-bit
// approximation of the stored window, enough to look closer; the server's render keeps the DICOM window).
// The checkbox shows the AI's class-activation heatmap over the image.
document.addEventListener("DOMContentLoaded", () => {
  const viewer = document.querySelector(".viewer");
  if (!viewer) return;
  const base = viewer.querySelector("img.base");
  const heat = viewer.querySelector("img.heat");
  const center = document.querySelector("input[name=center]");
  const width = document.querySelector("input[name=width]");
  const toggle = document.querySelector("input[name=heatmap]");
  const update = () => {
    const contrast = 100 / Number(width.value);
    const brightness = 1 + (50 - Number(center.value)) / 50;
    base.style.filter = `contrast(${contrast}) brightness(${brightness})`;
  };
  center.addEventListener("input", update);
  width.addEventListener("input", update);
  if (heat) toggle.addEventListener("change", () => { heat.hidden = !toggle.checked; });
  else toggle.disabled = true;
});
