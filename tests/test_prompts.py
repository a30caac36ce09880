"""Prompt texts are compatibility constants: checked byte-for-byte against SPEC §3."""

from socioseg import prompts

# Written out independently from the SPEC, not built from the module's pieces.
STAGE1_ZOO = (
    "You will be given two images. The first is a map and the second is a corresponding satellite"
    " image.Please find 'Jinan Zoo' with bboxs.Compare the difference between object(s) and find"
    " the most closely matched object(s).Output the thinking process in <think> </think> and"
    " final answer in <answer> </answer> tags. Please use English.Output the bbox(es) in JSON"
    ' format.i.e., <think>thinking process here </think><answer>[{"bbox_2d": [bx1,by1,bx2,by2]},'
    ' {"bbox_2d": [bx3,by3,bx4,by4]}]</answer>'
)
STAGE2_SCHOOL = (
    "You will be given two images. The first is a map and the second is a corresponding satellite"
    ' image.Now some bbox(s) and the results after SAM segmentation for "School" have been'
    ' rendered on these two images.The found bbox(s) are: [{"bbox_2d": [1, 2, 3, 4]}].Please'
    " add some points appropriately to each bbox to better represent the area of interest.Output"
    " the thinking process in <think> </think> and final answer in <answer> </answer> tags.i.e.,"
    ' <think> thinking process here </think><answer>[{"bbox_2d": [bx1,by1,bx2,by2], "points":'
    ' [[px1,py1],[px2,py2],[px3,py3]]}, {"bbox_2d": [bx3,by3,bx4,by4], "points":'
    " [[px4,py4],[px5,py5],[px6,py6]}]</answer>"
)
SINGLE_PARK = (
    "You will be given two images. The first is a map and the second is a corresponding satellite"
    " image.Please find 'Park and greenspace' with bboxs and some points appropriately to each"
    " bbox to better represent the area of interest.Compare the difference between object(s) and"
    " find the most closely matched object(s).Output the thinking process in <think> </think> and"
    " final answer in <answer> </answer> tags. Please use English.Output the bbox(es) in JSON"
    ' format.i.e., <think>thinking process here </think><answer>[{"bbox_2d": [bx1,by1,bx2,by2],'
    ' "points": [[px1,py1],[px2,py2],[px3,py3]]}, {"bbox_2d": [bx3,by3,bx4,by4], "points":'
    " [[px4,py4],[px5,py5],[px6,py6]}]</answer>"
)


def test_stage1_text_is_byte_exact():
    assert prompts.stage1_text("Jinan Zoo").encode() == STAGE1_ZOO.encode()


def test_stage2_text_is_byte_exact():
    text = prompts.stage2_text("School", '[{"bbox_2d": [1, 2, 3, 4]}]')
    assert text.encode() == STAGE2_SCHOOL.encode()


def test_single_stage_text_is_byte_exact():
    assert prompts.single_stage_text("Park and greenspace").encode() == SINGLE_PARK.encode()


def test_stage2_with_no_stage1_answer_inserts_empty_string():
    assert "The found bbox(s) are: .Please add" in prompts.stage2_text("School", "")


def test_placeholders_in_user_text_are_not_filled_again():
    text = prompts.stage2_text("{answer} {boxes}", "{query}")
    assert 'for "{answer} {boxes}" have' in text
    assert "The found bbox(s) are: {query}.Please" in text


def test_chat_message_is_map_then_satellite_then_text():
    content = prompts.chat_messages("hi")[0]["content"]
    assert [c["type"] for c in content] == ["image", "image", "text"]
    assert content[2]["text"] == "hi"
